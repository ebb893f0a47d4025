"""Which local ports are free, and whether a given process is the one listening on a port.

Standard library only. The launcher and the demo check their ports before they start anything,
and the runtime harness only talks to a port once the process it started holds it: a server that
someone else runs on the same port (another runtime, another program) never gets a request.
"""

# Standard
from typing import Dict, List, Optional, Sequence, Set, Tuple
import os
import pathlib
import socket

# /proc/net/tcp's state code of a listening socket.
_TCP_LISTEN = "0A"


def busy_ports(host: str, ports: Dict[str, int]) -> List[Tuple[str, int]]:
    """The (server, port) pairs of ``ports`` that something else already listens on at ``host``.

    Probed by binding, as the servers will, never by connecting: whoever holds a port receives
    nothing from this check.
    """
    busy = []
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for server, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the servers do: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append((server, port))
    return busy


def busy_ports_message(host: str, busy: Sequence[Tuple[str, int]]) -> str:
    """One line naming every busy port and the environment variable that moves each."""
    taken = ", ".join(f"{port} ({server})" for server, port in busy)
    overrides = " ".join(f"RUNTIME_{server.upper()}_PORT=<port>" for server, _ in busy)
    verb = "is" if len(busy) == 1 else "are"
    return (
        f"port{'s' if len(busy) > 1 else ''} {taken} {verb} already in use on {host}: stop the "
        f"program that holds {'it' if len(busy) == 1 else 'them'}, or choose other ports with "
        f"{overrides}"
    )


def listens_on(pid: int, port: int) -> Optional[bool]:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (any local address).

    Read from Linux's /proc (the socket's inode among the process's open files); None where
    /proc does not say, so that callers can fall back to a weaker check.
    """
    tables = [pathlib.Path("/proc/net/tcp"), pathlib.Path("/proc/net/tcp6")]
    if not tables[0].is_file():
        return None
    inodes = set()
    for table in tables:
        if table.is_file():
            inodes |= _listening_inodes(table.read_text(), port)
    if not inodes:
        return False
    return bool(inodes & _socket_inodes(pid))


def _listening_inodes(table: str, port: int) -> Set[str]:
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        if len(fields) <= 9 or fields[3] != _TCP_LISTEN:
            continue
        if int(fields[1].split(":")[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> Set[str]:
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes
