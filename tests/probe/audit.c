/* Escape-class audit, run inside a container by the tests: one line per check, "PASS name" or
 * "FAIL name: detail". Classes and probes follow shared/reference/security.md section 2. Never
 * performs a harmful action for real: writes go to files opened O_APPEND and are never written, the
 * reboot check only inspects the conditions, device reads are 512 bytes. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/if_packet.h>
#include <net/if.h>

static int failures;

static void result(const char *name, int ok, const char *detail) {
        if (ok)
                printf("PASS %s\n", name);
        else {
                printf("FAIL %s: %s\n", name, detail);
                failures++;
        }
        fflush(stdout);
}

static int writable(const char *path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0)
                return 0;
        close(fd);
        return 1;
}

static int readable_bytes(const char *path) {
        char buf[512];
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return -1;
        ssize_t n = read(fd, buf, sizeof buf);
        close(fd);
        return (int) n;
}

static int uid_map_maps_root(void) {
        FILE *f = fopen("/proc/self/uid_map", "re");
        unsigned long inside, outside, count;
        int bad = 0;
        if (!f)
                return 1;
        while (fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3)
                if (outside == 0)
                        bad = 1;
        fclose(f);
        return bad;
}

static void check_kernel_knobs(const char *prefix) {
        char name[128];
        const char *paths[] = {"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sysrq-trigger",
                               "/sys/kernel/uevent_helper", "/proc/sys/vm/panic_on_oom", NULL};
        for (int i = 0; paths[i]; i++) {
                snprintf(name, sizeof name, "%s%s_not_writable", prefix, strrchr(paths[i], '/') + 1);
                result(name, !writable(paths[i]), paths[i]);
        }
}

/* From DIRFD, walk ".." many times and report whether we end where "/" is. */
static int walk_up_stays_inside(int dirfd) {
        struct stat st, root;
        if (fchdir(dirfd) < 0)
                return 1;
        for (int i = 0; i < 256; i++)
                if (chdir("..") < 0)
                        break;
        stat(".", &st);
        stat("/", &root);
        chdir("/");
        return st.st_ino == root.st_ino && st.st_dev == root.st_dev;
}

static void in_child(const char *name, void (*fn)(void)) {
        pid_t p = fork();
        if (p == 0) {
                fn();
                fflush(stdout);
                _exit(failures ? 1 : 0);
        }
        int status;
        waitpid(p, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                failures++;
        (void) name;
}

static void unshared_mount_checks(void) {
        if (unshare(CLONE_NEWNS) < 0) {
                result("umount_masks", 1, "cannot unshare a mount namespace");
                return;
        }
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
        const char *masks[] = {"/proc/kallsyms", "/proc/keys", "/proc/timer_list", "/proc/sys", "/proc/sysrq-trigger", NULL};
        for (int i = 0; masks[i]; i++) {
                char name[96];
                snprintf(name, sizeof name, "umount_%s", strrchr(masks[i], '/') + 1);
                int r = umount2(masks[i], MNT_DETACH);
                result(name, r < 0 || access(masks[i], F_OK) < 0, "a mask could be removed");
        }
        result("remount_proc_sys_rw", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL) < 0,
               "/proc/sys remounted read-write");
        check_kernel_knobs("after_umount_");
        mkdir("/tmp/.audit-proc", 0700);
        if (mount("proc", "/tmp/.audit-proc", "proc", 0, NULL) == 0) {
                result("new_procfs_core_pattern", !writable("/tmp/.audit-proc/sys/kernel/core_pattern"),
                       "a fresh procfs exposes a writable core_pattern");
                result("new_procfs_sysrq", !writable("/tmp/.audit-proc/sysrq-trigger"), "fresh procfs sysrq");
        } else { /* refused (mnt_too_revealing): nothing to probe, the class holds */
                result("new_procfs_core_pattern", 1, "");
                result("new_procfs_sysrq", 1, "");
        }
        mkdir("/tmp/.audit-sys", 0700);
        if (mount("sysfs", "/tmp/.audit-sys", "sysfs", 0, NULL) == 0)
                result("new_sysfs_uevent_helper", !writable("/tmp/.audit-sys/kernel/uevent_helper"), "fresh sysfs");
        else
                result("new_sysfs_uevent_helper", 1, "");
        mkdir("/tmp/.audit-cg", 0700);
        int v1 = mount("cgroup", "/tmp/.audit-cg", "cgroup", 0, "none,name=hutchaudit") == 0 ||
                 mount("cgroup", "/tmp/.audit-cg", "cgroup", 0, "memory") == 0;
        result("cgroup_release_agent", !v1 || !writable("/tmp/.audit-cg/release_agent"),
               "a v1 hierarchy with a writable release_agent");
        result("readonly_root_enforced",
               access("/.hutch-ro", F_OK) < 0 || mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) < 0,
               "the read-only root was remounted read-write");
}

static void nested_userns_checks(void) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
                result("nested_userns", 1, "no nested user namespace");
                return;
        }
        check_kernel_knobs("nested_");
}

int main(void) {
        /* root == host root */
        result("userns_root_is_not_host_root", !uid_map_maps_root(), "uid 0 is the host's root");
        /* host pids */
        char comm[64] = "";
        FILE *f = fopen("/proc/2/comm", "re");
        if (f) {
                if (!fgets(comm, sizeof comm, f))
                        comm[0] = 0;
                fclose(f);
        }
        result("pidns_private", strncmp(comm, "kthreadd", 8) != 0, "host PID 2 (kthreadd) visible");
        /* leaked fds and cwd */
        DIR *d = opendir("/proc/self/fd");
        int leak = 0;
        struct dirent *e;
        while (d && (e = readdir(d))) {
                int fd = atoi(e->d_name);
                if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
                        continue;
                leak = 1;
        }
        if (d)
                closedir(d);
        result("fd_leak", !leak, "an inherited file descriptor");
        int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        result("cwd_inside", walk_up_stays_inside(cwd), "the working directory leads outside");
        close(cwd);
        /* other processes' roots */
        int outside = 0;
        d = opendir("/proc");
        while (d && (e = readdir(d))) {
                char p[300];
                if (e->d_name[0] < '0' || e->d_name[0] > '9')
                        continue;
                snprintf(p, sizeof p, "/proc/%s/root", e->d_name);
                int fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (fd >= 0) {
                        if (!walk_up_stays_inside(fd))
                                outside = 1;
                        close(fd);
                }
        }
        if (d)
                closedir(d);
        result("foreign_process_fs_access", !outside, "a process's root leads outside");
        /* kernel knobs, directly */
        check_kernel_knobs("");
        result("sys_read_only", !writable("/sys/kernel/profiling") && !writable("/sys/power/state"), "/sys writable");
        result("kallsyms_masked", readable_bytes("/proc/kallsyms") <= 0, "/proc/kallsyms readable");
        result("kcore_masked", readable_bytes("/proc/kcore") <= 0, "/proc/kcore readable");
        /* cgroups */
        f = fopen("/sys/fs/cgroup/cgroup.procs", "re");
        int foreign = 0, pid;
        while (f && fscanf(f, "%d", &pid) == 1)
                if (pid == 0)
                        foreign = 1;
        if (f)
                fclose(f);
        result("cgroup_host_tree_not_visible", !foreign, "processes outside the container are listed");
        /* devices */
        const char *devs[] = {"/dev/sda", "/dev/vda", "/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/vcs", NULL};
        int opened = 0;
        for (int i = 0; devs[i]; i++)
                if (readable_bytes(devs[i]) > 0)
                        opened = 1;
        result("no_host_devices", !opened, "a host device node is readable");
        /* In /dev and / (no nodev there, unlike /tmp). */
        struct { const char *name; mode_t mode; dev_t dev; } nodes[] = {
                {"/dev/.audit-vda", S_IFBLK | 0600, makedev(254, 0)}, {"/dev/.audit-sda", S_IFBLK | 0600, makedev(8, 0)},
                {"/dev/.audit-mem", S_IFCHR | 0600, makedev(1, 1)}, {"/dev/.audit-kmsg", S_IFCHR | 0600, makedev(1, 11)},
                {"/.audit-vda", S_IFBLK | 0600, makedev(254, 0)}, {"/.audit-mem", S_IFCHR | 0600, makedev(1, 1)},
                {"/dev/.audit-vcs", S_IFCHR | 0600, makedev(7, 0)}, /* the host console's text */
                {NULL, 0, 0}};
        int usable = 0;
        for (int i = 0; nodes[i].name; i++) {
                unlink(nodes[i].name);
                if (mknod(nodes[i].name, nodes[i].mode, nodes[i].dev) == 0 && readable_bytes(nodes[i].name) > 0)
                        usable = 1;
                unlink(nodes[i].name);
        }
        result("mknod_devices_unusable", !usable, "a device created with mknod can be read");
        /* kernel log */
        char logbuf[64];
        result("kernel_log_not_readable", syscall(SYS_syslog, 3, logbuf, sizeof logbuf) < 0, "dmesg readable");
        /* seccomp and capabilities */
        result("finit_module_blocked", syscall(SYS_finit_module, -1, "", 0) < 0 && errno != EBADF, "finit_module reached the kernel");
        result("settimeofday_blocked", syscall(SYS_settimeofday, NULL, NULL) < 0, "settimeofday allowed");
        result("swapon_blocked", syscall(SYS_swapon, "/nonexistent-audit", 0) < 0 && errno != ENOENT, "swapon reached the kernel");
        result("keyctl_blocked", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -4, 0) < 0, "keyctl allowed");
        result("bpf_blocked", syscall(SYS_bpf, 0, NULL, 0) < 0 && errno != EFAULT && errno != EINVAL, "bpf reached the kernel");
        result("iopl_blocked", syscall(SYS_iopl, 3) < 0, "iopl allowed");
        char handle[128] = {0};
        *(unsigned int *) handle = 8;
        result("open_by_handle_at_blocked",
               syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY) < 0 && (errno == EPERM || errno == ENOSYS),
               "open_by_handle_at reached the kernel");
        /* chroot escape */
        int top = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        mkdir("/tmp/.audit-chroot", 0700);
        int escaped = 0;
        pid_t c = fork();
        if (c == 0) {
                if (chroot("/tmp/.audit-chroot") == 0) {
                        struct stat st;
                        fchdir(top);
                        for (int i = 0; i < 256; i++)
                                chdir("..");
                        chroot(".");
                        _exit(stat("/run/host/container-manager", &st) == 0 ? 0 : 3);
                }
                _exit(0);
        }
        int status;
        waitpid(c, &status, 0);
        escaped = WIFEXITED(status) && WEXITSTATUS(status) == 3;
        result("chroot_escape_blocked", !escaped, "chroot + .. left the container root");
        /* reboot: never called; only whether it would reach the host */
        FILE *u = fopen("/proc/self/uid_map", "re");
        unsigned long a = 1, b = 1, n = 0;
        if (u) {
                if (fscanf(u, "%lu %lu %lu", &a, &b, &n) != 3)
                        a = 1;
                fclose(u);
        }
        int init_userns = a == 0 && b == 0 && n == 4294967295UL;
        result("reboot_cannot_reach_host", !(init_userns && strncmp(comm, "kthreadd", 8) == 0), "host reboot possible");
        /* host network control */
        int s = socket(AF_PACKET, SOCK_RAW, 0);
        int packet = s >= 0;
        if (s >= 0)
                close(s);
        int link_ok = 0;
        s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s >= 0) {
                struct ifreq ifr;
                memset(&ifr, 0, sizeof ifr);
                strcpy(ifr.ifr_name, "lo");
                if (ioctl(s, SIOCGIFMTU, &ifr) == 0 && ioctl(s, SIOCSIFMTU, &ifr) == 0)
                        link_ok = 1;
                close(s);
        }
        int own_netns = access("/sys/class/net/lo", F_OK) == 0 && !access("/sys/class/net/eth0", F_OK) == 0;
        result("host_network_not_controllable", own_netns || (!packet && !link_ok), "host network interfaces changeable");
        /* runtime sockets */
        const char *socks[] = {"/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock",
                               "/run/systemd/private", "/run/dbus/system_bus_socket", "/run/hutch", NULL};
        int found = 0;
        for (int i = 0; socks[i]; i++)
                if (access(socks[i], F_OK) == 0 && !(strcmp(socks[i], "/run/dbus/system_bus_socket") == 0))
                        found = 1;
        result("no_host_runtime_sockets", !found, "a host control socket is visible");
        /* TIOCSTI: our terminal must be the container's own */
        struct stat tty, ptmx;
        int foreign_tty = 0;
        if (fstat(0, &tty) == 0 && S_ISCHR(tty.st_mode)) {
                if (major(tty.st_rdev) == 4)
                        foreign_tty = 1; /* a virtual console */
                else if (major(tty.st_rdev) >= 136 && major(tty.st_rdev) <= 143 && stat("/dev/pts/ptmx", &ptmx) == 0 &&
                         tty.st_dev != ptmx.st_dev)
                        foreign_tty = 1;
        }
        result("tty_not_host_terminal", !foreign_tty, "stdin is a terminal of the host");
        /* checks that need their own mount or user namespace */
        in_child("unshared", unshared_mount_checks);
        in_child("nested", nested_userns_checks);
        return 0;
}
