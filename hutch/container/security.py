"""What the payload may do: systemd-nspawn's seccomp allow-list, edited by --system-call-filter=.

The list (src/nspawn/nspawn-seccomp.c): whole groups, capability-gated groups and calls, and ~50 single
calls. Knowingly excluded, as upstream: @cpu-emulation, @keyring (not namespaced), @obsolete, @pkey,
@swap, bpf, fanotify_*, kexec_*, lookup_dcookie, nfsservctl, open_by_handle_at, perf_event_open, quotactl.
"""

from __future__ import annotations

from hutch.linux import caps, seccomp

ALLOW_GROUPS = (
    "@aio",
    "@basic-io",
    "@chown",
    "@default",
    "@file-system",
    "@io-event",
    "@ipc",
    "@mount",
    "@network-io",
    "@process",
    "@resources",
    "@setuid",
    "@signal",
    "@sync",
    "@timer",
)
ALLOW_IF_CAP = (
    ("SYS_TIME", "@clock"),
    ("SYS_MODULE", "@module"),
    ("SYS_RAWIO", "@raw-io"),
    ("IPC_LOCK", "@memlock"),
    ("SYS_PACCT", "acct"),
    ("SYS_PTRACE", "process_vm_readv"),
    ("SYS_PTRACE", "process_vm_writev"),
    ("SYS_PTRACE", "ptrace"),
    ("SYS_BOOT", "reboot"),
    ("SYSLOG", "syslog"),
    ("SYS_TTY_CONFIG", "vhangup"),
)
ALLOW_CALLS = (
    "brk", "capget", "capset", "copy_file_range", "fadvise64", "fadvise64_64", "flock", "get_mempolicy",
    "getcpu", "getpriority", "getrandom", "ioctl", "ioprio_get", "kcmp", "madvise", "mincore", "mprotect",
    "mremap", "name_to_handle_at", "oldolduname", "olduname", "personality", "readahead", "readdir",
    "remap_file_pages", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval", "sched_yield",
    "seccomp",
    "sendfile", "sendfile64", "setdomainname", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
    "sethostname", "setpgid", "setsid", "splice", "sysinfo", "tee", "umask", "uname", "userfaultfd",
    "vmsplice", "cachestat", "mseal",
)  # fmt: skip


def allowed_names(keep_caps: frozenset[int], add: list[str], remove: list[str]) -> set[str]:
    from hutch.linux import seccomp_groups

    names: set[str] = set()
    for g in ALLOW_GROUPS:
        names |= seccomp_groups.expand(g)
    names |= set(ALLOW_CALLS)
    for cap, item in ALLOW_IF_CAP:
        if caps.NUMBERS[cap] in keep_caps:
            names |= seccomp_groups.expand(item)
    for item in add:
        names |= seccomp_groups.expand(item)
    for item in remove:
        names -= seccomp_groups.expand(item)
    return names


# --suppress-sync: these return 0 at once, as upstream's seccomp_suppress_sync() makes them. (O_SYNC
# opens stay as they are: a filter can refuse a flag but not strip it.)
SYNC_CALLS = ("fdatasync", "fsync", "msync", "sync", "sync_file_range", "syncfs")


def program(
    keep_caps: frozenset[int], add: list[str], remove: list[str], cache_dir: str, suppress_sync: bool = False
) -> bytes:
    """The BPF program for this policy on x86_64, from the cache when it was compiled before.

    The cache key is made of the inputs (kept capabilities, edits), so a start that hits the cache never
    loads the syscall tables; the compiler's version is part of it, so a change rebuilds."""
    capmask = 0
    for c in keep_caps:
        capmask |= 1 << c
    key = f"x86_64-{COMPILER_VERSION}-{capmask:x}-{'+'.join(add)}-{'~'.join(remove)}"
    if suppress_sync:
        key += "-nosync"
    if len(key) > 200 or "/" in key:
        import hashlib

        key = f"x86_64-{COMPILER_VERSION}-{hashlib.sha256(key.encode()).hexdigest()}"
    return seccomp.cached(cache_dir, key, lambda: build(keep_caps, add, remove, suppress_sync))


def build(
    keep_caps: frozenset[int], add: list[str], remove: list[str], suppress_sync: bool = False
) -> bytes:
    from hutch.linux import syscalls_x86_64 as table

    nums = {table.NUMBERS[n] for n in allowed_names(keep_caps, add, remove) if n in table.NUMBERS}
    known = set(table.NUMBERS.values())
    nop = frozenset(table.NUMBERS[n] for n in SYNC_CALLS) if suppress_sync else frozenset()
    return seccomp.compile_filter(nums, known, table.AUDIT_ARCH, table.X32_BIT, table.NUMBERS["socket"], nop)


# Bump when the policy tables or the compiler change: cached programs are keyed by it.
COMPILER_VERSION = "v1"
