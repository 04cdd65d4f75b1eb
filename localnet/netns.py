"""Each site in a network namespace of its own, on a Linux bridge; some behind a hospital firewall.

`medfed-localnet up --netns [--firewalled K]` (issue 19): a bridge ``<tag>br`` with the host's
address ``10.A.B.1/24`` (the chain RPC listens there), one namespace ``<tag>-<i>`` per site with a
veth pair and the address ``10.A.B.<i+2>``; the last K sites get a stateful firewall that drops
every NEW inbound connection (outbound and its replies pass):

    iptables -A INPUT -i lo -j ACCEPT
    iptables -A INPUT -m conntrack --ctstate NEW -j DROP

A chain whose RPC listens on 127.0.0.1 only (the Cypherium node) is made reachable from the
namespaces at ``http://10.A.B.1:PORT`` by a DNAT rule in the root namespace and
``net.ipv4.conf.<tag>br.route_localnet=1`` (:func:`forward_rpc`):

    iptables -t nat -A PREROUTING -i <tag>br -d 10.A.B.1 -p tcp --dport PORT \
        -m comment --comment medfed:<tag> -j DNAT --to-destination 127.0.0.1:PORT

(and the same in OUTPUT, without ``-i``, for this host's own connections to that address).
The tag derives from the federation's folder, so `down` finds and removes the namespaces, the
bridge, (with the namespaces) the veths and rules, and every root-namespace rule commented
``medfed:<tag>`` even when nothing was recorded (a crash); removing what is not there is not an
error. Needs root, `ip` (iproute2) and `iptables`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localnet.errors import FederationError

log = logging.getLogger("medfed.localnet")

NETNS_FILE = "netns.json"
P2P_PORT = 4001  # every site listens on its own address, same port
# a hospital firewall: loopback passes, every NEW inbound connection is dropped (replies pass)
FIREWALL = (["-i", "lo", "-j", "ACCEPT"], ["-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"])


class NetnsError(FederationError):
    """Network namespaces cannot be set up here; the message says why and what to do."""


@dataclass(frozen=True)
class NetPlan:
    """Names and addresses of a namespaced federation."""

    tag: str  # "mf" + 6 hex digits of the folder's hash: every interface name stays <= 15 chars
    subnet: str  # "10.A.B": the bridge is .1, site i is .(i+2)
    sites: int
    firewalled: tuple[int, ...]

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    def ns(self, i: int) -> str:
        """Namespace of site i."""
        return f"{self.tag}-{i}"

    def site_ip(self, i: int) -> str:
        return f"{self.subnet}.{i + 2}"

    def listen(self, i: int) -> str:
        """Site i's libp2p listen multiaddr."""
        return f"/ip4/{self.site_ip(i)}/tcp/{P2P_PORT}"

    def p2p(self, i: int) -> dict[str, Any]:
        """Site i's [p2p] settings (``node_config_text`` keywords): its own address in its namespace;
        a firewalled site is private (reached through relays), the others relay for it."""
        private = i in self.firewalled
        reach = "private" if private else "public"
        return {"listen": self.listen(i), "reachability": reach, "relay": not private}

    def rpc_url(self, rpc_url: str) -> str:
        """The chain RPC URL as the sites see it: the same port on the bridge's address."""
        return f"http://{self.host_ip}:{rpc_url.rsplit(':', 1)[1]}"

    @property
    def comment(self) -> str:
        """The comment on this plan's root-namespace iptables rules (what `teardown` looks for)."""
        return f"medfed:{self.tag}"

    def exec_prefix(self, i: int) -> list[str]:
        """Command prefix that runs a program inside site i's namespace."""
        return ["ip", "netns", "exec", self.ns(i)]

    def to_json(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "subnet": self.subnet,
            "sites": self.sites,
            "firewalled": list(self.firewalled),
        }


def tag_for(dir: str | Path) -> str:
    """The interface/namespace tag of a federation folder."""
    return "mf" + hashlib.sha256(str(Path(dir).resolve()).encode()).hexdigest()[:6]


def plan(dir: str | Path, sites: int, firewalled: int) -> NetPlan:
    """The plan for ``sites`` namespaces, the last ``firewalled`` of them behind the firewall."""
    if not 1 <= sites <= 200:
        raise NetnsError(f"--nodes {sites}: --netns supports 1..200 sites")
    if not 0 <= firewalled < sites:
        raise NetnsError(
            f"--firewalled {firewalled}: choose 0..{sites - 1}; at least one site must accept "
            "connections to relay for the firewalled ones"
        )
    tag = tag_for(dir)
    h = hashlib.sha256(tag.encode()).digest()
    subnet = f"10.{100 + h[0] % 100}.{h[1]}"
    return NetPlan(tag, subnet, sites, tuple(range(sites - firewalled, sites)))


def check_available(firewalled: int, forward: bool = False) -> None:
    """NetnsError (one line, naming the fix) unless namespaces (and iptables: for ``firewalled``
    sites, or to ``forward`` a loopback-only RPC to the bridge) can be used."""
    if os.geteuid() != 0:
        raise NetnsError("--netns needs root (namespaces, veth, a bridge): run it as root or drop --netns")
    if shutil.which("ip") is None:
        raise NetnsError("--netns needs `ip` (Debian: apt-get install iproute2)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise NetnsError(f"`ip netns` does not work here ({_first_line(probe.stderr)}); drop --netns")
    if (firewalled or forward) and shutil.which("iptables") is None:
        what = "--firewalled" if firewalled else "--netns with --chain cypherium"
        raise NetnsError(
            f"{what} needs iptables: run `bash scripts/bootstrap.sh system` as root (installs it)"
        )


def create(root: Path, p: NetPlan) -> None:
    """Set the plan up (removing leftovers of an earlier run first) and record it in D/netns.json."""
    teardown(root, p.tag)
    (root / NETNS_FILE).write_text(json.dumps(p.to_json(), indent=1) + "\n")
    try:
        _ip("link", "add", p.bridge, "type", "bridge")
        _ip("addr", "add", f"{p.host_ip}/24", "dev", p.bridge)
        _ip("link", "set", p.bridge, "up")
        for i in range(p.sites):
            ns, host_end, site_end = p.ns(i), f"{p.tag}v{i}", f"{p.tag}p{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", site_end)
            _ip("link", "set", site_end, "netns", ns)
            _ip("link", "set", host_end, "master", p.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{p.site_ip(i)}/24", "dev", site_end)
            _ip("-n", ns, "link", "set", site_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", p.host_ip)
            if i in p.firewalled:
                for rule in FIREWALL:
                    _run(["ip", "netns", "exec", ns, "iptables", "-A", "INPUT", *rule])
    except BaseException:
        teardown(root, p.tag)
        raise
    log.info(
        "network namespaces %s-0..%d on bridge %s (%s.0/24), firewalled: %s",
        p.tag,
        p.sites - 1,
        p.bridge,
        p.subnet,
        list(p.firewalled) or "none",
    )


@contextmanager
def set_up(root: Path, p: NetPlan | None) -> Iterator[None]:
    """Create ``p`` (nothing when None) around the block that starts the chain in it; remove it
    again when the block fails (nothing else was started in it yet)."""
    if p is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    create(root, p)
    try:
        yield
    except BaseException:
        teardown(root, p.tag)
        raise


def forward_rpc(p: NetPlan, port: int) -> None:
    """Make a chain RPC that listens on 127.0.0.1:``port`` reachable from the namespaces at
    ``p.host_ip:port`` (and from this host): DNAT rules (commented with the plan's tag, so
    `teardown` removes them) and route_localnet on the bridge (gone with the bridge)."""
    _run(["sysctl", "-q", "-w", f"net.ipv4.conf.{p.bridge}.route_localnet=1"])
    to = ["-d", p.host_ip, "-p", "tcp", "--dport", str(port), "-m", "comment", "--comment", p.comment]
    to += ["-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"]
    # from the namespaces (through the bridge), and from this host itself (a site's medfed.toml
    # then works from here too, e.g. `medfed-node status`)
    for rule in (["PREROUTING", "-i", p.bridge, *to], ["OUTPUT", *to]):
        if subprocess.run(["iptables", "-t", "nat", "-C", *rule], capture_output=True).returncode != 0:
            _run(["iptables", "-t", "nat", "-A", *rule])
    log.info("chain RPC 127.0.0.1:%d reachable from the namespaces at %s:%d", port, p.host_ip, port)


def tagged_rules(tag: str) -> list[tuple[str, str]]:
    """(table, `iptables -S` line) of every root-namespace rule commented ``medfed:<tag>``."""
    if shutil.which("iptables") is None:
        return []
    found = []
    for table in ("nat", "filter"):
        out = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [(table, line) for line in out.splitlines() if _has_comment(line, f"medfed:{tag}")]
    return found


def _has_comment(rule: str, comment: str) -> bool:
    words = rule.split()
    return any(w == "--comment" and words[k + 1].strip('"') == comment for k, w in enumerate(words[:-1]))


def load(root: Path) -> NetPlan | None:
    """The plan recorded in D/netns.json, or None."""
    try:
        d = json.loads((root / NETNS_FILE).read_text())
        fw = tuple(int(x) for x in d["firewalled"])
        return NetPlan(str(d["tag"]), str(d["subnet"]), int(d["sites"]), fw)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def teardown(root: Path, tag: str | None = None) -> list[str]:
    """Remove the namespaces (with their veths and firewall rules) and the bridge of the federation
    in ``root``; return what was removed. Idempotent; a no-op without root or `ip`."""
    tag = tag or tag_for(root)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    removed: list[str] = []
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        # processes still inside keep a namespace's network alive: `down` stops them first
        if name.startswith(f"{tag}-") and subprocess.run(["ip", "netns", "del", name]).returncode == 0:
            removed.append(f"namespace {name}")
    for link in (f"{tag}br",):
        if subprocess.run(["ip", "link", "del", link], capture_output=True).returncode == 0:
            removed.append(f"bridge {link}")
    # a veth whose namespace is gone disappears with it; one left by a half-done setup goes here
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        parts = line.split(": ")
        if len(parts) > 1 and parts[1].split("@")[0].startswith(f"{tag}v"):
            subprocess.run(["ip", "link", "del", parts[1].split("@")[0]], capture_output=True)
    for table, line in tagged_rules(tag):  # the RPC forward (a chain on loopback): root namespace
        if (
            line.startswith("-A ")
            and subprocess.run(
                ["iptables", "-t", table, "-D", *shlex.split(line)[1:]], capture_output=True
            ).returncode
            == 0
        ):
            removed.append(f"iptables {table} rule {line.split()[1]} ({tag})")
    (root / NETNS_FILE).unlink(missing_ok=True)
    return removed


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {_first_line(r.stderr)}")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "no message"
