#!/bin/bash
# The systemd-host lane's checks, run inside the VM (tests/vm/lane.py) by tests/vm/test_systemd_host.py,
# which reads back their KEY=VALUE lines. One section per boot: main (kernel 6.12), then reboot-old (the
# same disk rebooted into kernel 6.1: what `hutch enable` started comes back, then the kernel-dependent
# checks again). Images live in the VM's own /var/lib/machines.
set -u
export TMPDIR=/var/tmp SYSTEMD_PAGER=
S=/sys/fs/cgroup/machine.slice
say() { printf '%s=%s\n' "$1" "$(echo "$2" | tr -d '\r' | tr '\n' '|')"; }
# Every step bounded, so a hang fails its own check rather than the whole boot.
HUTCH=$(type -P hutch)
for tool in hutch machinectl systemctl journalctl systemd-cgls systemd-analyze systemd-run; do
    eval "$tool() { timeout 300 $(type -P $tool) \"\$@\"; }"
done
ms() { echo $(($(date +%s%N) / 1000000)); }
since() { echo $(($(ms) - $1)); }

facts() {
    say pid1 "$(cat /proc/1/comm)"
    say cgroupfs "$(stat -fc %T /sys/fs/cgroup)"
    say kernel "$(uname -r)"
    [ -d /var/lib/machines/bb ] || hutch bootstrap busybox bb >/dev/null 2>&1
    say bootstrap "$?"
}

spawns() {
    say spawn "$(hutch spawn -q -M bb /bin/echo spawned 2>&1)"
    say spawn_cgroup "$(hutch spawn -q -M bb /bin/cat /proc/self/cgroup 2>&1)"
    # The supervisor is exempt from the OOM killer; PID 1 has the caller's value and cannot go lower.
    say spawn_oom "$(hutch spawn -q -M bb /bin/sh -c 'cat /proc/self/oom_score_adj; echo -1000 > /proc/self/oom_score_adj || echo refused' 2>&1)"
    say ephemeral "$(hutch spawn -q -x -M bb /bin/sh -c 'touch /new && echo ephemeral-ok' 2>&1)"
    say ephemeral_left "$(ls /var/lib/machines/bb/new 2>&1 | grep -c 'No such')"
    say volatile "$(hutch spawn -q --volatile=overlay -M bb /bin/sh -c 'touch /v && echo volatile-ok' 2>&1)"
    hutch clone bb base >/dev/null 2>&1 && hutch read-only base >/dev/null 2>&1
    hutch clone --thin base thin >/dev/null 2>&1
    say thin "$(hutch spawn -q -M thin /bin/sh -c 'echo x > /thin-file && echo thin-ok' 2>&1)"
    say thin_kept "$(hutch spawn -q -M thin /bin/cat /thin-file 2>&1)"
    mkdir -p /var/tmp/lower /var/tmp/upper && echo lower > /var/tmp/lower/l
    say overlay_opt "$(hutch spawn -q -M bb --overlay=/var/tmp/lower:/var/tmp/upper:/mnt/o /bin/sh -c 'cat /mnt/o/l && echo w > /mnt/o/w && echo overlay-ok' 2>&1)"
    say overlay_upper "$(cat /var/tmp/upper/w 2>&1)"
    maj=$((16#$(stat -c %t /dev/vda))) min=$((16#$(stat -c %T /dev/vda)))
    say devpolicy "$(hutch spawn -q --private-users=no -M bb /bin/sh -c "echo x > /dev/null && echo null-ok; mknod /dev/disk0 b $maj $min; head -c 512 /dev/disk0 >/dev/null && echo disk-opened" 2>&1)"
}

machine() {
    hutch start bb >/dev/null 2>&1
    say start_rc "$?"
    say scope_active "$(systemctl is-active machine-bb.scope)"
    say scope_delegate "$(systemctl show -P Delegate machine-bb.scope)"
    say scope_slice "$(systemctl show -P Slice machine-bb.scope)"
    say list_units "$(systemctl list-units --no-legend 'machine-*' | grep -c 'machine-bb.scope')"
    say cgls "$(systemd-cgls --no-pager -u machine-bb.scope | grep -Ec 'payload|supervisor')"
    say guest_controllers "$(cat $S/machine-bb.scope/payload/cgroup.controllers)"
    say machinectl_list "$(machinectl list --no-legend | awk '{print $1 "/" $2 "/" $3}')"
    say machinectl_status "$(machinectl status bb --no-pager | grep -E -o 'Leader: [0-9]+|Unit: machine-bb.scope' | sort)"
    say machine_unit "$(machinectl show bb -P Unit)"
    timeout 300 "$HUTCH" shell bb /bin/sleep 30 &
    local shell=$! i
    for i in $(seq 100); do pgrep -x sleep >/dev/null && break; sleep 0.1; done
    say shell_cgroup "$(cat /proc/"$(pgrep -n -x sleep)"/cgroup)"
    kill "$shell"
    wait
    hutch poweroff --wait bb >/dev/null 2>&1
    say poweroff_rc "$?"
    sleep 1
    say scope_after "$(systemctl is-active machine-bb.scope)"
    say machined_after "$(machinectl list --no-legend | grep -c '^bb ')"
}

limits() {
    hutch start bb --property=MemoryMax=32M --property=TasksMax=20 --property=CPUQuota=20% >/dev/null 2>&1
    say limits_start "$?"
    local scope=$S/machine-bb.scope
    say memory_max "$(cat $scope/memory.max)"
    say pids_max "$(cat $scope/pids.max)"
    say cpu_max "$(cat $scope/cpu.max)"
    say unit_memory_max "$(systemctl show -P MemoryMax machine-bb.scope)"
    say shell_dd "$(hutch shell bb /bin/sh -c 'dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo $?' 2>&1)"
    local leader
    leader=$(hutch show bb -p Leader --value)
    say oom_alive "$(systemctl is-active machine-bb.scope)"
    say oom_supervisor "$(cat /proc/"$(awk '/^PPid/{print $2}' /proc/"$leader"/status)"/oom_score_adj)"
    say oom_leader "$(cat /proc/"$leader"/oom_score_adj)"
    say shell_forks "$(hutch shell bb /bin/sh -c 'for i in $(seq 30); do sleep 3 & done 2>&1 | grep -ci -e fork -e resource' 2>&1)"
    # CPUQuota=20%: a busy loop is throttled, and gets about a fifth of one CPU.
    local t0 u0 u1 n0 n1
    n0=$(awk '/^nr_throttled/{print $2}' $scope/cpu.stat)
    timeout 300 "$HUTCH" shell bb /bin/sh -c 'while :; do :; done' >/dev/null 2>&1 &
    for i in $(seq 100); do pgrep -f 'while :' >/dev/null && break; sleep 0.1; done
    t0=$(ms) u0=$(awk '/^usage_usec/{print $2}' $scope/cpu.stat)
    sleep 5
    u1=$(awk '/^usage_usec/{print $2}' $scope/cpu.stat) n1=$(awk '/^nr_throttled/{print $2}' $scope/cpu.stat)
    say cpu_share_pct "$(((u1 - u0) / 10 / ($(ms) - t0)))"
    say cpu_throttled "$((n1 - n0))"
    kill $!
    wait
    hutch set-property bb MemoryMax=48M
    say setprop_rc "$?"
    say memory_max_live "$(cat $scope/memory.max)"
    say unit_memory_max_live "$(systemctl show -P MemoryMax machine-bb.scope)"
    systemd-run -q --slice=machine.slice --wait /bin/true # systemd rewrites machine.slice for its units
    systemctl daemon-reload
    sleep 1
    say reload_memory_max "$(cat $scope/memory.max)"
    say reload_subtree "$(cat $scope/cgroup.subtree_control)"
    say reload_shell_dd "$(hutch shell bb /bin/sh -c 'dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo $?' 2>&1)"
    systemctl restart systemd-logind
    sleep 1
    hutch status bb >/dev/null 2>&1
    say logind_restart_status "$?"
    say logind_memory_max "$(cat $scope/memory.max)"
    hutch poweroff --wait bb >/dev/null 2>&1
}

session() {
    hutch clone bb bb2 >/dev/null 2>&1
    # A login session of its own (pam_systemd), which ends when the command does.
    systemd-run -q --wait -p PAMName=login -p User=root hutch start bb2 >/dev/null 2>&1
    say session_start "$?"
    sleep 1
    hutch status bb2 >/dev/null 2>&1
    say session_survivor "$?"
    say session_scope "$(systemctl is-active machine-bb2.scope)"
    hutch poweroff --wait bb2 >/dev/null 2>&1
}

machined_verbs() {
    local t i
    # machined is started on demand (by D-Bus activation); once it runs, hutch registers over varlink.
    machinectl list >/dev/null 2>&1
    say varlink_socket "$(test -S /run/systemd/machine/io.systemd.Machine && echo yes)"
    hutch start bb >/dev/null 2>&1
    say varlink_unit "$(machinectl show bb -P Unit 2>&1)"
    hutch poweroff --wait bb >/dev/null 2>&1
    # Its varlink socket hidden, as on hosts before systemd 256: hutch registers over D-Bus.
    unshare -m sh -c 'mount -t tmpfs tmpfs /run/systemd/machine && exec timeout 300 "$0" start bb' "$HUTCH" \
        >/dev/null 2>&1
    say dbus_start "$?"
    say dbus_unit "$(machinectl show bb -P Unit 2>&1)"
    t=$(ms)
    machinectl terminate bb
    for i in $(seq 600); do
        case "$(systemctl is-active machine-bb.scope)" in active | deactivating) sleep 0.1 ;; *) break ;; esac
    done
    say terminated_ms "$(since "$t")"
    sleep 1
    say terminated_scope "$(systemctl is-active machine-bb.scope)"
    say terminated_hutch "$(hutch status bb >/dev/null 2>&1; echo $?)"
    say terminated_machined "$(machinectl list --no-legend | grep -c '^bb ')"
    # The supervisor SIGKILLed: its container dies with it; systemd and machined collect the rest.
    hutch start bb >/dev/null 2>&1
    kill -9 $(cat $S/machine-bb.scope/supervisor/cgroup.procs)
    sleep 2
    say killed_scope "$(systemctl is-active machine-bb.scope)"
    say killed_hutch "$(hutch status bb >/dev/null 2>&1; echo $?)"
    say killed_machined "$(machinectl list --no-legend | grep -c '^bb ')"
    hutch start bb >/dev/null 2>&1
    say restarted "$?"
    hutch poweroff --wait bb >/dev/null 2>&1
}

systemd_guest() {
    local t
    t=$(ms)
    hutch start deb >/dev/null 2>&1
    say deb_start "$?"
    say hutch_start_ms "$(since "$t")"
    say is_system_running "$(timeout 120 systemctl -M deb is-system-running --wait 2>&1)"
    say analyze "$(systemd-analyze -M deb 2>&1 | grep -c 'Startup finished')"
    say journal "$(journalctl -M deb --no-pager -n 5 2>&1 | grep -vc 'No entries')"
    say cgls_m "$(systemd-cgls -M deb --no-pager 2>&1 | grep -c 'init.scope')"
    say systemd_run_m "$(timeout 60 systemd-run -M deb -q --wait /bin/true 2>&1; echo "rc$?")"
    say machinectl_shell "$(timeout 60 machinectl shell deb /bin/echo via-machinectl 2>&1 | grep -c via-machinectl)"
    say deb_guest_controllers "$(hutch shell deb /bin/cat /sys/fs/cgroup/cgroup.controllers 2>&1)"
    t=$(ms)
    hutch shell deb /bin/true
    say hutch_shell_ms "$(since "$t")"
    t=$(ms)
    if [ "${1:-}" = machinectl ]; then  # through machined: SIGRTMIN+4 to the leader, systemd's poweroff
        machinectl poweroff deb
        for i in $(seq 600); do hutch status deb >/dev/null 2>&1 || break; sleep 0.1; done
        say machinectl_poweroff "$(hutch status deb >/dev/null 2>&1; echo $?)"
        say machinectl_poweroff_machined "$(machinectl list --no-legend | grep -c '^deb ')"
    else
        hutch poweroff --wait deb >/dev/null 2>&1
    fi
    say hutch_poweroff_ms "$(since "$t")"
    # bench/systemd_host.py runs the same steps with systemd-nspawn and machinectl, for the times.
}

enable() {
    # --now: through systemctl start hutch@bb.service, as machinectl enable --now starts its unit.
    hutch enable --now bb >/dev/null 2>&1
    say enable_rc "$?"
    say unit_active "$(systemctl is-active hutch@bb.service)"
    say unit_machine "$(machinectl show bb -P Unit 2>&1)"
    say unit_payload "$(cat /sys/fs/cgroup/machine.slice/hutch@bb.service/payload/cgroup.procs 2>/dev/null | grep -c .)"
    say unit_in_slice "$(systemctl show -P Slice hutch@bb.service)"
}

after_reboot() {
    say rebooted_active "$(systemctl is-active hutch@bb.service)"
    say rebooted_hutch "$(hutch status bb >/dev/null 2>&1; echo $?)"
    say rebooted_machined "$(machinectl list --no-legend | grep -c '^bb ')"
    systemctl stop hutch@bb.service
    say unit_stop "$?"
    say unit_stopped_machine "$(hutch status bb >/dev/null 2>&1; echo $?)"
    hutch disable bb >/dev/null 2>&1
    hutch remove thin base bb2 >/dev/null 2>&1
    rm -rf /var/tmp/lower /var/tmp/upper
}

suite() {
    # The suite's own cgroup tests, against this host's real hierarchy and systemd.
    # The Debian image the suite's fixtures want is this VM's own copy of it (the same cache key).
    local out key
    key=$(python3 -c 'import hashlib; print(hashlib.sha256(open("/mnt/checkout/hutch/images/bootstrap.py", "rb").read()).hexdigest()[:16])')
    mkdir -p /var/cache/hutch-test/debian-"$key" && ln -sfn /var/lib/machines/deb /var/cache/hutch-test/debian-"$key"/deb
    # Not the 100 start-stop cycles: minutes each under emulation.
    out=$(cd /mnt/checkout && HUTCH_TEST_BIN=/usr/local/bin/hutch PYTHONPYCACHEPREFIX=/var/cache/hutch-pyc \
        timeout 1200 python3 -m pytest -q -p no:cacheprovider tests/root/test_limits.py \
        tests/root/test_machines.py -k "(limit or cgroup or property or shell or split) and not cycles" 2>&1)
    say pytest_rc "$?"
    say pytest "$(echo "$out" | tail -15)"
}

case "$1" in
main) facts; spawns; machine; limits; session; systemd_guest; suite; enable ;;
reboot-old) after_reboot; facts; spawns; machine; limits; machined_verbs; systemd_guest machinectl; suite ;;
machined) facts; machined_verbs; systemd_guest machinectl ;;
suite) suite ;;
esac
echo "done=$1"
