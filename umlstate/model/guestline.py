"""A guest's kernel command line as a typed value: written in one place, read back in the same place.

Model layer. The planner builds it (plan/cmdline.py chooses each NIC's wire for the kernel); the executor
spawns its ``argv``; the boot wait reads the addresses it told the guest; hot-plug compares its NICs with
those of the running guest; the action details summarise it; the mconsole socket is found from its
``uml_dir``. A running guest's line is ``parse``d from the argv root recorded when it spawned it (never
from the guest), by the inverse of ``argv``: the grammar lives here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

CONSOLE_WORD = "con1=fd:0"  # the guest's tty1 is its stdin, the master of the pty root makes for it
# The first console (the kernel's, /dev/console) to stdout, the guest's log; the others nowhere.
QUIET_CONSOLES = ("con=null", "con0=null,fd:1")
NO_SERIAL = "ssl=null"
SEED_WORD = "ubd1r="  # the seed disk, read-only: /dev/ubdb in the guest (plan/seed.py)
HINT_PREFIX = "umlstate."  # umlstate.<ifname>=ADDR/PFX, umlstate.gw=GATEWAY: read by the guest's init


@dataclass(frozen=True)
class Nic:
    """One NIC word as UML reads it (``eth0=daemon,MAC,unix,SOCKET``, ``vec0:transport=tap,ifname=TAP,...``),
    and the address the guest is told for it."""

    ifname: str  # what the guest calls it: eth<i> or vec<i>
    word: str
    address: str | None = None  # ADDR/PFX
    gateway: str | None = None  # its subnet's gateway, told with the first NIC whose subnet has one

    @property
    def hint(self) -> str | None:
        return f"{HINT_PREFIX}{self.ifname}={self.address}" if self.address else None

    @property
    def hints(self) -> tuple[str, ...]:
        return tuple(h for h in (self.hint, f"{HINT_PREFIX}gw={self.gateway}" if self.gateway else None) if h)

    @property
    def options(self) -> dict[str, str]:
        """A vector NIC's key=value options; a legacy NIC's comma-separated fields by position."""
        spec = self.word[len(self.ifname) + 1:]
        if self.ifname.startswith("vec"):
            return dict(o.partition("=")[::2] for o in spec.split(","))
        return {str(i): part for i, part in enumerate(spec.split(","))}

    @property
    def transport(self) -> str:
        """daemon, vde, tuntap (legacy), or vector-tap, vector-vde, ..."""
        o = self.options
        return f"vector-{o.get('transport', '?')}" if self.ifname.startswith("vec") else o.get("0", "?")

    @property
    def live(self) -> bool:
        """UML makes and removes a vector tap NIC's device at run time: it can be plugged into a running guest."""
        return self.transport == "vector-tap"

    @property
    def summary(self) -> str:
        """What the guest sees and how it is wired: `vec0 vector tap web-0`, `eth0 daemon`."""
        o = self.options
        if self.ifname.startswith("vec"):
            return (f"{self.ifname} vector {o.get('transport', '?')}" + (f" {o['ifname']}" if "ifname" in o else "")
                    + (f" mtu {o['mtu']}" if "mtu" in o else ""))
        return f"{self.ifname} {o['0']}" + (f" {o['1']}" if o["0"] == "tuntap" and "1" in o else "")

    @staticmethod
    def ifname_of(word: str) -> str | None:
        """eth<i> of ``eth<i>=...``, vec<i> of ``vec<i>:...``; None for any other word."""
        for prefix, sep in (("eth", "="), ("vec", ":")):
            name, found, _ = word.partition(sep)
            if found and name.startswith(prefix) and name[len(prefix):].isdigit():
                return name
        return None


@dataclass(frozen=True)
class GuestLine:
    """The whole command line, in a fixed order so that equal topologies give equal argv."""

    kernel: str
    umid: str
    uml_dir: str
    mem: str
    disk: str  # what follows ubd0=: COW,BASE or IMAGE
    nics: tuple[Nic, ...] = ()
    seed: str | None = None  # its seed disk, read-only (ubd1r=): the guest's /dev/ubdb
    args: tuple[str, ...] = ()  # the topology's extra words, last
    console: bool = True  # con1=fd:0; guests started before umlstate made consoles lack it

    @cached_property
    def argv(self) -> tuple[str, ...]:
        words = [self.kernel, f"umid={self.umid}", f"uml_dir={self.uml_dir}", f"mem={self.mem}", f"ubd0={self.disk}",
                 *([f"{SEED_WORD}{self.seed}"] if self.seed else []),
                 *QUIET_CONSOLES, *([CONSOLE_WORD] if self.console else []), NO_SERIAL]
        words += [n.word for n in self.nics]
        words += [h for n in self.nics for h in n.hints]
        return (*words, *self.args)

    @property
    def gateway(self) -> str | None:
        return next((n.gateway for n in self.nics if n.gateway), None)

    @property
    def addresses(self) -> list[str]:
        """The addresses the guest was told, bare: what must answer before it is ready."""
        return [n.address.partition("/")[0] for n in self.nics if n.address]

    @property
    def mconsole(self) -> str:
        return f"{self.uml_dir}/{self.umid}/mconsole"

    @property
    def summary(self) -> str:
        return f"{self.kernel} mem={self.mem}" + "".join(f"; {n.summary}" for n in self.nics)

    def same_but_nics(self, other: GuestLine) -> bool:
        """Equal but for their NICs (and whether a console is made): what hot-plug may close by itself."""
        return replace(self, nics=(), console=True) == replace(other, nics=(), console=True) \
            and self.gateway == other.gateway

    @classmethod
    def parse(cls, argv: Sequence[str]) -> GuestLine | None:
        """A recorded argv back into its line; None when umlstate did not write it this way (an older
        release's line, or a switch's): its guest is then replaced rather than changed live."""
        words = list(argv)
        fixed = ("umid=", "uml_dir=", "mem=", "ubd0=")
        if len(words) < 5 + len(QUIET_CONSOLES) + 1 \
                or not all(w.startswith(p) for w, p in zip(words[1:5], fixed, strict=True)):
            return None
        umid, uml_dir, mem, disk = (w.partition("=")[2] for w in words[1:5])
        rest = words[5:]
        seed = rest.pop(0)[len(SEED_WORD):] if rest[0].startswith(SEED_WORD) else None
        if rest[:len(QUIET_CONSOLES)] != list(QUIET_CONSOLES):
            return None
        rest = rest[len(QUIET_CONSOLES):]
        console = bool(rest) and rest[0] == CONSOLE_WORD
        rest = rest[1:] if console else rest
        if not rest or rest[0] != NO_SERIAL:
            return None
        rest = rest[1:]
        nics: list[Nic] = []
        while rest and (ifname := Nic.ifname_of(rest[0])):
            nics.append(Nic(ifname, rest.pop(0)))
        told: list[Nic] = []
        for nic in nics:  # in the order argv writes them; args may follow
            address = gateway = None
            if rest and rest[0].startswith(f"{HINT_PREFIX}{nic.ifname}="):
                address = rest.pop(0).partition("=")[2]
            if rest and rest[0].startswith(f"{HINT_PREFIX}gw=") and not any(n.gateway for n in told):
                gateway = rest.pop(0).partition("=")[2]
            told.append(replace(nic, address=address, gateway=gateway))
        if any(_own(word) for word in rest):  # args never repeat what umlstate writes (model/guest_rules.py)
            return None
        line = cls(words[0], umid, uml_dir, mem, disk, tuple(told), seed, tuple(rest), console)
        return line if line.argv == tuple(argv) else None


def _own(word: str) -> bool:
    """A NIC word, or a hint umlstate writes itself (umlstate.gw=, umlstate.<ifname>=)."""
    key = word[len(HINT_PREFIX):].partition("=")[0] if word.startswith(HINT_PREFIX) else None
    return Nic.ifname_of(word) is not None or key == "gw" or (key is not None and Nic.ifname_of(f"{key}=") is not None)


def mconsole_of(argv: Sequence[str], umid: str) -> str | None:
    """A guest's mconsole socket, from the command line root started it with (never from the guest)."""
    line = GuestLine.parse(argv)
    return line.mconsole if line is not None and line.umid == umid else None
