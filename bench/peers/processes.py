"""Server processes of the peers' bench: started in a process group of their own, checked to
listen on 127.0.0.1 only, measured (RSS of the whole process tree) and always stopped.

Linux only: process trees, memory and listening sockets are read from /proc.
"""

# Standard
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple
import ipaddress
import os
import pathlib
import re
import signal
import subprocess
import time

INTERRUPT_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HELPERS_EXIT_S = 5.0
SHARED_MEMORY = pathlib.Path("/dev/shm")
LISTEN_STATE = "0A"


def _children() -> Dict[int, List[int]]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The command name (field 2) may hold spaces: the fields after it are plain.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def process_tree(pid: int) -> List[int]:
    """``pid`` and every process below it."""
    children, tree, pending = _children(), [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += children.get(current, [])
    return tree


def _start_time(pid: int) -> Optional[str]:
    """When ``pid`` started (clock ticks after boot): tells a process from a later one that
    reused its id."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid``'s whole process tree, in MiB (shared pages counted per process,
    as ``ps`` and the runtime's memory figures do)."""
    total_kib = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status", encoding="ascii") as status:
                total_kib += next(
                    (int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0
                )
        except OSError:
            continue  # it exited meanwhile
    return total_kib / 1024


def _signal_tree(pid: int, signal_number: int) -> None:
    for member in process_tree(pid):
        try:
            os.kill(member, signal_number)
        except ProcessLookupError:
            pass


def pause(pid: int) -> None:
    """Stop ``pid``'s whole process tree (SIGSTOP): a server not under test takes no CPU, not
    even a loop that polls a queue every millisecond (LitServe's, 5 to 12 % of a core here)."""
    _signal_tree(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    """Continue ``pid``'s process tree (SIGCONT) after ``pause``."""
    _signal_tree(pid, signal.SIGCONT)


def _listening_sockets() -> Dict[str, Tuple[str, int]]:
    """{socket inode: (address, port)} of every listening TCP socket on this machine."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] != LISTEN_STATE:
                        continue
                    address_hex, port_hex = fields[1].split(":")
                    # The kernel prints each 32-bit word of the address in host byte order.
                    raw = b"".join(
                        bytes.fromhex(address_hex[i : i + 8])[::-1]
                        for i in range(0, len(address_hex), 8)
                    )
                    sockets[fields[9]] = (str(ipaddress.ip_address(raw)), int(port_hex, 16))
        except FileNotFoundError:
            continue
    return sockets


def listening_addresses(pid: int) -> Set[Tuple[str, int]]:
    """(address, port) of every TCP socket that ``pid``'s process tree listens on."""
    sockets, found = _listening_sockets(), set()
    for member in process_tree(pid):
        try:
            links = [
                os.readlink(f"/proc/{member}/fd/{fd}") for fd in os.listdir(f"/proc/{member}/fd")
            ]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in sockets:
                found.add(sockets[link[8:-1]])
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def check_loopback_only(name: str, pid: int) -> None:
    """Raise unless every socket ``pid``'s tree listens on is on the loopback interface."""
    exposed = sorted(
        (address, port) for address, port in listening_addresses(pid) if not is_loopback(address)
    )
    if exposed:
        raise RuntimeError(
            f"{name} listens beyond the loopback interface on "
            + ", ".join(f"{address}:{port}" for address, port in exposed)
            + ": every server of the bench must bind 127.0.0.1 only; fix its start in bench/peers/"
        )


def _remove_shared_memory_of(pids: Iterable[int]) -> None:
    """Remove the /dev/shm entries whose name holds ``<pid>-`` of one of ``pids`` (processes
    that are gone: a server killed before its clean-up leaves them)."""
    if not SHARED_MEMORY.is_dir():
        return
    for entry in SHARED_MEMORY.iterdir():
        if any(re.search(rf"(?<![0-9]){pid}-", entry.name) for pid in pids):
            entry.unlink(missing_ok=True)


def log_tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServerProcess:
    """One server started in its own session; ``stop`` ends its group and every process below."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Dict[str, str],
        log_path: pathlib.Path,
        cwd: pathlib.Path,
    ):
        self.name, self.log_path = name, log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_listening(self, ports: Sequence[int], timeout_s: float) -> None:
        """Wait until the tree listens on every one of ``ports``; raise (with the log) when the
        server exits first or does not get there in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode} before listening:\n"
                    f"{log_tail(self.log_path)}"
                )
            listening = {port for _, port in listening_addresses(self.pid)}
            if set(ports) <= listening:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not listening on {sorted(set(ports) - listening)} after "
                    f"{timeout_s:.0f} s:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGINT to the server (what Ctrl-C sends: every peer shuts its workers down on it),
        SIGTERM to its process group after ``INTERRUPT_TIMEOUT_S``, SIGKILL to whatever of the
        tree is left after ``STOP_TIMEOUT_S``; then the shared memory named after its processes
        (PyTriton's ``/dev/shm/pytrtion<pid>-*``) is removed."""
        tree = {member: _start_time(member) for member in process_tree(self.pid)}
        resume(self.pid)  # a paused process acts on no signal but SIGKILL
        for signal_number, target, timeout_s in (
            (signal.SIGINT, os.kill, INTERRUPT_TIMEOUT_S),
            (signal.SIGTERM, os.killpg, STOP_TIMEOUT_S),
        ):
            if self.process.poll() is not None:
                break
            try:
                target(self.pid, signal_number)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # The server's helpers (e.g. multiprocessing's resource tracker, which unlinks the
        # semaphores in /dev/shm) finish after it: a moment before the group is killed.
        deadline = time.monotonic() + HELPERS_EXIT_S
        while time.monotonic() < deadline and any(
            member != self.pid and _start_time(member) == started
            for member, started in tree.items()
        ):
            time.sleep(0.1)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # What left the group (a child that started a session of its own), by its own id.
        for member, started in tree.items():
            if member != self.pid and started is not None and _start_time(member) == started:
                try:
                    os.kill(member, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.wait()
        _remove_shared_memory_of(tree)


@contextmanager
def running_server(
    name: str,
    argv: Sequence[str],
    env: Dict[str, str],
    log_path: pathlib.Path,
    cwd: pathlib.Path,
    ports: Sequence[int],
    ready_timeout_s: float,
) -> Iterator[ServerProcess]:
    """A server listening on ``ports`` and on the loopback interface only; stopped on exit."""
    server = ServerProcess(name, argv, env, log_path, cwd)
    try:
        server.wait_listening(ports, ready_timeout_s)
        check_loopback_only(name, server.pid)
        yield server
    finally:
        server.stop()
