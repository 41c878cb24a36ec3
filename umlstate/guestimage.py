"""A tiny guest image (busybox and an init), for the tests and the demo.

Not part of the reconciling pipeline: it makes the kind of disk a user would
bring, in milliseconds, with ``mkfs.ext2 -d``. Its init does what a guest
managed by umlstate should do: mount /proc, set ctrl-alt-del to 0 (otherwise
mconsole ``cad`` reboots the guest, since UML re-executes itself), configure
each NIC from ``umlstate.eth<i>=`` or ``umlstate.vec<i>=`` and the default route from
``umlstate.gw=`` on /proc/cmdline, and power off on SIGINT, which is what the
kernel sends init on ``cad`` once ctrl-alt-del is 0. For tests, each
``umlstate.ping=ADDR`` word makes it ping that neighbour and log the result,
``umlstate.sink=PORT`` keeps a TCP sink listening there (for the benchmark's throughput), each
``umlstate.mark=WORD`` is appended to /marks on its disk (listed at every boot),
a NIC plugged in live is configured from the ``umlstate.vecN=`` line umlstate
writes into the guest's kernel log (mconsole ``log``),
``umlstate.cad=reboot`` leaves ctrl-alt-del alone, as a careless init would, and
``umlstate.cad=ignore`` ignores it altogether, as a hung or odd init might; with
``umlstate.net=off`` it leaves its network alone, as an image unaware of umlstate would.
A guest with a seed disk (/dev/ubdb, plan/seed.py) takes its hostname, sysctls, files and
routes from its ``umlstate/`` folder, runs its startup script and says "umlstate: network up";
the image carries the vfat modules of each UML kernel installed here.
A root shell waits on tty1, the console ``umlstate console`` attaches to.
``build(..., extra={"bin/pkt": Path("pkt")})`` adds files of the caller's (the
tests' packet tool for a hostile guest), each with its mode.

    python -m umlstate.guestimage /srv/uml/base.img
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

# The orders umlstate gives a running guest through mconsole `log` (a NIC's address when it plugs one in live;
# `umlstate check`'s nonce), read as the kernel logs them, from /dev/kmsg: `cat` waits there for each new record,
# so a guest that is told nothing runs nothing (a loop reading dmesg every second kept a host's CPU half busy
# with twelve idle guests). A record is an order only when the kernel wrote it (facility 0: a process that
# writes /dev/kmsg is given another) and it is whole (the kernel logs other lines with text a guest's user
# controls, which must never add an address). `order` decides with builtins alone (a process costs a UML guest
# dearly); `candidates` in front of it keeps the shell from reading the whole log since boot a byte at a time.
# The busybox init and contrib/guest/umlstate-net carry these same two functions.
KMSG_ORDER = r"""# candidates: of the kernel log on stdin (/dev/kmsg: each record since boot, then each new one as it
# comes), only the lines that may be orders, each at once. A filter reads the records in blocks, where the
# shell's read takes a byte a system call, dear in a UML guest: reading every record since boot so slowed a
# farm's boot by a tenth. GNU grep where there is one; else awk, which busybox's flushes when told (mawk
# would wait for a full buffer).
candidates() {
    if echo x | grep --line-buffered -q x 2>/dev/null; then
        cat | grep --line-buffered -F ';umlstate: umlstate.'
    else
        cat | awk 'index($0, ";umlstate: umlstate.") { print; fflush() }'
    fi
}
# order RECORD: whether a /dev/kmsg record ("PRIO,SEQ,TIME,FLAGS;TEXT") is an order umlstate wrote;
# sets $kind to check (and $value to its nonce) or to vec (and $value to vecN=ADDR/LEN).
order() {
    case "${1%%,*}" in [0-7]) ;; *) return 1 ;; esac
    value="${1#*;umlstate: umlstate.}"
    case "${1#*;}" in
        "umlstate: umlstate.check="*)
            kind=check; value="${value#check=}"
            case "$value" in ""|*[!a-z0-9]*) return 1 ;; esac ;;
        "umlstate: umlstate.vec"*)
            kind=vec
            case "${value%%=*}" in vec|vec*[!0-9]*) return 1 ;; esac
            case "${value#*=}" in *[!0-9./]*|*/*/*|/*|*/) return 1 ;; */*) ;; *) return 1 ;; esac ;;
        *) return 1 ;;
    esac
}"""

# The modules a guest needs for IPv6 and to read its seed disk (vfat), for each UML kernel whose modules are
# installed (Debian builds them as modules; sid's 7.2 has IPv6 built in): /lib/modules/<version>/<name>.ko in
# the image, loaded by the init in this order.
UML_MODULES = "/usr/lib/uml/modules"
GUEST_MODULES = ("kernel/lib/crc-ccitt.ko", "kernel/net/ipv6/ipv6.ko", "kernel/fs/fat/fat.ko",
                 "kernel/fs/fat/vfat.ko", "kernel/fs/nls/nls_cp437.ko", "kernel/fs/nls/nls_iso8859-1.ko")

INIT = """#!/bin/sh
# umlstate guest init: network from /proc/cmdline, clean power-off on cad.
mount -t proc proc /proc
mount -t sysfs sys /sys
grep -q 'umlstate.cad=reboot' /proc/cmdline || echo 0 > /proc/sys/kernel/ctrl-alt-del
cad=poweroff
grep -q 'umlstate.cad=ignore' /proc/cmdline && cad=ignore
gw=""
want6=""
peers=""
sink=""
net=on
grep -q 'umlstate.net=off' /proc/cmdline && net=off
for m in @MODULES@; do  # what Debian's UML kernels build as modules: IPv6, vfat for the seed disk
    [ -f "/lib/modules/$(uname -r)/$m.ko" ] && insmod "/lib/modules/$(uname -r)/$m.ko" 2>/dev/null
done
seed=""  # its seed disk (ubd1r=, plan/seed.py): a vfat file system
if [ -b /dev/ubdb ] && [ "$net" = on ]; then
    mount -t vfat -o ro /dev/ubdb /seed && seed=/seed/umlstate
    [ -n "$seed" ] || echo "umlstate-guest: cannot read its seed disk /dev/ubdb"
fi
by_mac() {  # the NIC whose MAC is $1
    for f in /sys/class/net/*/address; do [ "$(cat "$f")" = "$1" ] && { f="${f%/address}"; echo "${f##*/}"; }; done
}
renamed=""  # UML's name=the seed's, for the command line's umlstate.<UML's name>= words
if [ -s "$seed/names" ]; then  # before any address or route: a link goes down to be renamed
    while read -r mac name; do
        dev="$(by_mac "$mac")"
        [ -n "$dev" ] && ip link set "$dev" name "$name" && renamed="$renamed $dev=$name" \
            || echo "umlstate-guest: cannot name $mac $name"
    done < "$seed/names"
fi
for word in $(cat /proc/cmdline); do
    [ "$net" = off ] && break
    case "$word" in
        umlstate.gw=*) gw="${word#*=}" ;;
        umlstate.ping=*) peers="$peers ${word#*=}" ;;
        umlstate.sink=*) sink="${word#*=}" ;;
        umlstate.eth*=*|umlstate.vec*=*) key="${word%%=*}"; dev="${key#umlstate.}"
                         for r in $renamed; do [ "${r%%=*}" = "$dev" ] && dev="${r#*=}"; done
                         case "$word" in *:*) want6=1 ;; esac
                         ip link set "$dev" up && ip addr add "${word#*=}" dev "$dev" ;;
    esac
done
if [ -s "$seed/addresses" ]; then  # a NIC's addresses after its first
    while read -r mac addr; do
        case "$addr" in *:*) want6=1 ;; esac
        dev="$(by_mac "$mac")"
        [ -n "$dev" ] && ip link set "$dev" up && ip addr add "$addr" dev "$dev" \
            || echo "umlstate-guest: cannot add $addr to $mac"
    done < "$seed/addresses"
fi
# Told IPv6 addresses, with a kernel that has no IPv6 (its module missing here): say so, for plan's warning.
[ -n "$want6" ] && [ ! -e /proc/net/if_inet6 ] && echo "umlstate: no IPv6 in kernel $(uname -r)"
[ -f /marks ] && echo "umlstate-guest: marks: $(cat /marks | tr '\n' ' ')"
for word in $(cat /proc/cmdline); do  # tests: leave a mark on the disk (its COW file), to see it survive a move
    case "$word" in
        umlstate.mark=*) mount -o remount,rw / && echo "${word#*=}" >> /marks && sync && mount -o remount,ro / \
                             && echo "umlstate-guest: marked ${word#*=}" ;;
    esac
done
ip link set lo up
[ -n "$gw" ] && ip route add default via "$gw"
if [ -n "$seed" ]; then
    hostname "$(cat "$seed/hostname")"
    while IFS='=' read -r key value; do
        [ -n "$key" ] && echo "$value" > "/proc/sys/$(echo "$key" | tr . /)"
    done < "$seed/sysctl"
    if [ -s "$seed/files" ]; then
        mount -o remount,rw /
        while read -r n mode path; do
            mkdir -p "${path%/*}" && cat "$seed/files.d/$n" > "$path" && chmod "$mode" "$path"
        done < "$seed/files"
        sync; mount -o remount,ro /
    fi
    while read -r to via; do
        [ "$to" = default ] && ip route del default 2>/dev/null
        ip route add "$to" via "$via" || echo "umlstate-guest: route $to via $via refused"
    done < "$seed/routes"
fi
echo "umlstate-guest: ready: $(ip -4 -o addr show | grep -v ' lo ' | awk '{print $2, $4}' | tr '\\n' ' ')"
if [ -s "$seed/startup" ]; then  # after its network, as root, at every boot; what it says goes to the log
    ( sh "$seed/startup" 2>&1 | sed 's/^/umlstate-guest: startup: /' ) &  # a daemon it starts keeps the pipe
fi
echo "umlstate: network up"  # its own report: ready, where the host cannot see it (apply/boot.py)
run_checks() {  # $1: a nonce ("boot", or umlstate check's); results as plan/checks.py reads them
    [ -s "$seed/checks" ] || return 0
    while read -r n addr expect; do
        # A check that should pass gets a few tries (each first packet may wait for neighbours on its way to
        # resolve, and a busy host is slow), and thirty at boot, when its peers may still be booting.
        tries=1; [ "$expect" = pass ] && tries=3; [ "$1" = boot ] && [ "$expect" = pass ] && tries=30
        got=fail
        while [ "$tries" -gt 0 ]; do
            ping -c1 -W1 "$addr" >/dev/null 2>&1 && { got=pass; break; }
            tries=$((tries - 1))
        done
        if [ "$got" = pass ]; then said=answered; else said="no answer"; fi
        if [ "$got" = "$expect" ]; then r=ok; else r=failed; fi
        echo "umlstate-check: $1 $n $r $(date +%s) ping $addr: $said, expected $expect"
    done < "$seed/checks"
}
[ -n "$seed" ] && run_checks boot &
[ -n "$sink" ] && ( while :; do nc -l -p "$sink" >/dev/null; done ) &  # benchmarks: a TCP sink
for peer in $peers; do  # tests: check a neighbour, and say so on the console (the log)
    ( for try in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
          ping -c1 -W1 "$peer" >/dev/null 2>&1 && { echo "umlstate-guest: ping $peer ok"; exit 0; }
          sleep 1
      done; echo "umlstate-guest: ping $peer failed" ) &
done
@KMSG_ORDER@
( while :; do  # cat ends only when the log wrapped under it; read again from the oldest record, an old ask's
      asked=""  # checks may run again, whose results nobody waits for any more
      candidates 2>/dev/null </dev/kmsg | while IFS= read -r record; do
          order "$record" || continue
          case "$kind" in
              check)  # `umlstate check`: run the checks again, once per ask
                  case " $asked " in *" $value "*) continue ;; esac
                  asked="$asked $value"
                  [ -n "$seed" ] && run_checks "$value" & ;;
              vec)  # a NIC plugged in live: its address, once the device shows
                  dev="${value%%=*}"; addr="${value#*=}"
                  ( for try in 1 2 3 4 5; do [ -e "/sys/class/net/$dev" ] && break; sleep 1; done
                    [ -e "/sys/class/net/$dev" ] || exit 0
                    ip -4 -o addr show dev "$dev" | grep -q " $addr " && exit 0
                    ip link set "$dev" up && ip addr add "$addr" dev "$dev" && echo "umlstate-guest: plugged $dev $addr"
                  ) & ;;
          esac
      done
      sleep 1
  done ) &
# A root shell on tty1, UML's con1: what `umlstate console` reaches. Respawned when it exits.
( while :; do setsid -c sh -i </dev/tty1 >/dev/tty1 2>&1; sleep 1; done ) &
if [ "$cad" = ignore ]; then trap '' INT; trap 'echo "umlstate-guest: powering off"; poweroff -f' TERM
else trap 'echo "umlstate-guest: powering off"; poweroff -f' INT TERM; fi
while :; do sleep 3600 & wait $!; done
""".replace("@KMSG_ORDER@", KMSG_ORDER)\
    .replace("@MODULES@", " ".join(Path(m).stem for m in GUEST_MODULES))
APPLETS = ("sh", "setsid", "mount", "ip", "sleep", "poweroff", "cat", "echo", "grep", "awk", "tr", "ping", "ls", "ps",
           "dmesg", "arping", "nc", "date", "insmod", "hostname", "mkdir", "chmod", "sed", "uname", "sync",
           "traceroute")


def build(out: Path, size_mb: int = 8, extra: Mapping[str, Path] | None = None,
          modules: Sequence[Path] = (Path(UML_MODULES),)) -> Path:
    """Write an ext2 image with busybox and the init above to ``out``.

    ``modules``: folders of UML kernels' modules (``<version>/kernel/...``, as Debian installs them and
    scripts/fetch-vector-kernel keeps them); GUEST_MODULES of each version go into the image.

    ``extra`` maps a path in the image (``bin/pkt`` or ``/bin/pkt``) to a host file copied
    there with its mode (folders made as needed, an applet link of that name replaced); the
    image grows by their size.
    """
    extra = dict(extra or {})
    places = {name: _place(name) for name in extra}
    size_mb += -(-sum(Path(source).stat().st_size for source in extra.values()) // (1 << 20))
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise SystemExit("busybox is not installed: apt-get install busybox-static")
    mkfs = shutil.which("mkfs.ext2") or "/usr/sbin/mkfs.ext2"
    with tempfile.TemporaryDirectory(prefix="umlstate-image-") as tmp:
        root = Path(tmp)
        for folder in ("bin", "sbin", "proc", "sys", "dev", "etc", "tmp", "root", "seed"):
            (root / folder).mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        versions = [v for folder in modules if folder.is_dir() for v in sorted(folder.iterdir()) if v.is_dir()]
        for version in versions:
            for module in GUEST_MODULES:
                if (version / module).is_file():
                    (root / "lib" / "modules" / version.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(version / module, root / "lib" / "modules" / version.name / Path(module).name)
        init = root / "sbin" / "init"
        init.write_text(INIT)
        init.chmod(0o755)
        for name, source in extra.items():
            target = root.joinpath(*places[name].parts)
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.unlink(missing_ok=True)  # never write through an applet's link into busybox
            shutil.copy2(source, target)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        subprocess.run([mkfs, "-q", "-F", "-d", str(root), "-b", "1024", str(out), f"{size_mb}M"],
                       check=True, capture_output=True)
    return out


def _place(name: str) -> PurePosixPath:
    """A path inside the image, relative to its root; refused when it would leave it."""
    place = PurePosixPath(name.lstrip("/"))
    if not place.parts or any(part in ("", ".", "..") for part in place.parts):
        raise ValueError(f"not a path inside the image: {name!r}")
    return place


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m umlstate.guestimage OUT.img")
    print(build(Path(sys.argv[1])))
