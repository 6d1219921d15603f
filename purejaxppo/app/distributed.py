"""Several processes on JAX's distributed runtime, for every command of the command line.

    # two processes on one machine, 2 CPU devices each (run both; the first hosts the coordinator)
    purejaxppo train --num-seeds 4 --out runs/two --local-devices 2 \\
        --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0
    purejaxppo train --num-seeds 4 --out runs/two --local-devices 2 \\
        --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 1

``--cluster`` takes the three values from the cluster's environment instead, as
``jax.distributed.initialize()`` reads it (Slurm, Open MPI, Kubernetes, Cloud TPU;
``JAX_COORDINATOR_ADDRESS``, ``JAX_COORDINATOR_PORT``); flags given too override it.

:func:`parse` reads these flags from a command's arguments (the command's own parser lists them
through :func:`add_flags`), and :func:`initialize` joins the processes before JAX runs anything.
Every command calls the pair the same way (``cli.main``).

Faults. JAX's runtime ends a process whose peers vanish with a fatal C++ log (SIGABRT and a
stack trace). So that the user reads one line instead, two watchdog threads act first: one gives
up when the processes have not all joined within ``--join-timeout`` seconds, the other when a
process stops beating (every process bumps a counter in the coordinator's key-value store each
second) for ``--heartbeat-timeout`` seconds. Either prints one line naming the process and exits
with code :data:`EXIT_FAULT`; JAX's own timeouts are set :data:`MARGIN_S` seconds later. When the
coordinator itself vanishes, JAX aborts the other processes at once, before any thread can act:
for that, each process's stderr passes through a small reader process (:data:`STDERR_FILTER`)
that replaces JAX's fatal log with one line naming the missing process (the exit status is then
JAX's, 134).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, NoReturn

EXIT_FAULT = 1
MARGIN_S = 60
"""JAX's own initialisation and heartbeat timeouts exceed ours by this much."""
BEAT_S = 1.0
"""How often each process bumps its counter and reads the others'."""
LEAVE_GRACE_S = 3.0
"""How long process 0 stays after an input error, so the others report theirs first."""
PREFIX = "purejaxppo: error: "


class SetupError(ValueError):
    """Bad process flags, or a coordinator port already in use; the message is one line."""


class Layout(NamedTuple):
    """How this process joins the others (the flags of :func:`add_flags`)."""

    coordinator: str | None
    """``HOST:PORT`` of process 0's coordinator; None: from the cluster's environment."""
    num_processes: int | None
    process_id: int | None
    local_devices: int | None
    """CPU devices of this process (``jax_num_cpu_devices``); None: one per core."""
    cluster: bool
    """Take what is not given from the cluster's environment."""
    join_timeout: int
    heartbeat_timeout: int


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of several processes, as a group of ``parser``."""
    group = parser.add_argument_group(
        "several processes (JAX's distributed runtime; every process runs the same command)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0, which hosts the coordinator on PORT")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    group.add_argument("--cluster", action="store_true",
                       help="read what the three flags above do not give from the cluster's "
                            "environment (Slurm, Open MPI, ...), as jax.distributed.initialize() "
                            "does")
    group.add_argument("--local-devices", type=int, metavar="N",
                       help="CPU devices of this process (default: one per core; GPUs and TPUs "
                            "are the devices whenever present)")
    group.add_argument("--join-timeout", type=int, default=120, metavar="S",
                       help="give up when not every process joined within S seconds "
                            "(default: 120)")
    group.add_argument("--heartbeat-timeout", type=int, default=60, metavar="S",
                       help="stop when another process gave no sign of life for S seconds "
                            "(default: 60)")


class _FlagParser(argparse.ArgumentParser):
    """Reads the process flags; a bad value is a :class:`SetupError` (one line), not argparse's
    usage block and exit."""

    def error(self, message: str) -> NoReturn:
        raise SetupError(message)


def parse(argv: list[str]) -> Layout:
    """The process flags among a command's arguments (the others are left to the command).

    Raises:
        SetupError: a value is invalid, or flags of several processes are incomplete.
    """
    parser = _FlagParser(add_help=False, allow_abbrev=False)
    add_flags(parser)
    ns, _ = parser.parse_known_args(argv)
    layout = Layout(coordinator=ns.coordinator, num_processes=ns.num_processes,
                    process_id=ns.process_id, local_devices=ns.local_devices, cluster=ns.cluster,
                    join_timeout=ns.join_timeout, heartbeat_timeout=ns.heartbeat_timeout)
    for name in ("local_devices", "num_processes", "join_timeout", "heartbeat_timeout"):
        value = getattr(layout, name)
        if value is not None and value < 1:
            raise SetupError(f"--{name.replace('_', '-')} {value} is invalid: must be >= 1")
    if layout.coordinator is not None:
        host, _, port = layout.coordinator.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise SetupError(f"--coordinator {layout.coordinator!r} is not HOST:PORT (e.g. "
                             "127.0.0.1:12345)")
    given = [n for n in ("coordinator", "num_processes", "process_id")
             if getattr(layout, n) is not None]
    if given and not layout.cluster and len(given) < 3:
        missing = [n for n in ("coordinator", "num_processes", "process_id") if n not in given]
        raise SetupError(f"several processes need --coordinator, --num-processes and "
                         f"--process-id; missing {', '.join('--' + m.replace('_', '-') for m in missing)}"
                         " (or pass --cluster to read them from the cluster's environment)")
    if (layout.process_id is not None and layout.num_processes is not None
            and not 0 <= layout.process_id < layout.num_processes):
        raise SetupError(f"--process-id {layout.process_id} is out of range: with "
                         f"--num-processes {layout.num_processes} it is 0..{layout.num_processes - 1}")
    return layout


def several(layout: Layout) -> bool:
    """Whether ``layout`` asks to join other processes."""
    return layout.cluster or layout.coordinator is not None


def initialize(layout: Layout) -> None:
    """Sets this process's devices and, for several processes, joins the others.

    Must run before JAX runs anything. On CPU the processes' collectives go through gloo.
    Returns once every process joined; a process that does not join within
    ``layout.join_timeout`` seconds ends this one with one line (:func:`fail`).

    Raises:
        SetupError: this process is process 0 and the coordinator's port is in use.
    """
    import jax

    from purejaxppo.parallel import use_cpu_cores

    if layout.local_devices is not None:
        use_cpu_cores(layout.local_devices)
    elif not several(layout):
        with contextlib.suppress(RuntimeError):  # JAX already runs, or XLA_FLAGS chose
            use_cpu_cores()
    if not several(layout):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if layout.process_id == 0 and layout.coordinator is not None:
        check_port_free(int(layout.coordinator.rpartition(":")[2]))
    who = "" if layout.process_id is None else f"process {layout.process_id}: "
    others = _others(layout.process_id, layout.num_processes)
    _filter_stdout()
    joined = threading.Event()
    _watch(lambda: joined.wait(layout.join_timeout) or fail(
        f"{who}{others} did not join the coordinator {layout.coordinator or '(from the cluster)'}"
        f" within {layout.join_timeout} s; start every process with the same --coordinator and "
        f"--num-processes, or raise --join-timeout"))
    jax.distributed.initialize(coordinator_address=layout.coordinator,
                               num_processes=layout.num_processes, process_id=layout.process_id,
                               initialization_timeout=layout.join_timeout + MARGIN_S,
                               heartbeat_timeout_seconds=layout.heartbeat_timeout + MARGIN_S)
    joined.set()
    _filter_stderr(f"process {jax.process_index()}")
    _start_heartbeat(layout.heartbeat_timeout)


def _others(process_id: int | None, num_processes: int | None) -> str:
    """Names the processes other than this one, for a message."""
    if process_id is None or num_processes is None:
        return "some process"
    rest = [i for i in range(num_processes) if i != process_id]
    if len(rest) == 1:
        return f"process {rest[0]}"
    return f"one of processes {', '.join(map(str, rest))}"


def check_port_free(port: int) -> None:
    """Raises :class:`SetupError` when ``port`` is taken on this machine (the coordinator binds
    it on every interface)."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                # As gRPC does: a closed connection's TIME_WAIT does not make the port "in use".
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
                return
        except OSError as e:
            if e.errno == 98 or "in use" in str(e).lower():
                raise SetupError(f"port {port} of --coordinator is already in use on this "
                                 "machine; choose a free port") from None
            continue  # the family is not available here: try the next one


_SPOKEN = threading.Lock()
"""Taken, never released, by the first error line this process prints."""


def say_error(message: str) -> bool:
    """Prints ``purejaxppo: error: message`` unless this process already printed its error line
    (a fault seen by the watchdog thread and by the main thread at once is one line, not two);
    returns whether it printed."""
    if not _SPOKEN.acquire(blocking=False):
        return False
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    print(PREFIX + message, file=sys.stderr, flush=True)
    return True


def fail(message: str) -> None:
    """Prints ``message`` as one error line (:func:`say_error`) and ends this process at once
    (exit :data:`EXIT_FAULT`), without waiting for peers that are gone."""
    say_error(message)
    os._exit(EXIT_FAULT)


PEER_LOST = ("closed by peer", "reset by peer", "Broken pipe", "Connection refused")
"""What gloo's error says when the other end of a collective is gone."""


def peer_lost(e: BaseException) -> str | None:
    """For a collective that failed because another process is gone (it died or was killed
    while this one waited in a gather), the line to say; None for any other error."""
    text = str(e)
    if "Gloo" not in text or not any(s in text for s in PEER_LOST):
        return None
    first = text.strip().splitlines()[0]
    detail = re.sub(r"\[[^\]]*\.cc:\d+\] ", "", first.split("Gloo", 1)[1])  # gloo's source line
    import jax

    return (f"process {jax.process_index()}: another process closed its connection during a "
            f"collective (it died or was killed; Gloo{detail}); the run cannot continue without "
            "it")


def leave(code: int) -> None:
    """Ends this process with ``code`` without JAX's exit barrier, which the others may never
    reach (an error that only this process found). Process 0 first waits
    :data:`LEAVE_GRACE_S` seconds, as the others end at once when its coordinator goes: so they
    report their own error when they found it too."""
    import jax

    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
        if jax.process_count() > 1 and jax.process_index() == 0:
            time.sleep(LEAVE_GRACE_S)
    os._exit(code)


STDERR_FILTER = r"""
import os, re, select, sys, time
label = sys.argv[1]
FATAL = b"JAX distributed service detected fatal errors"
held, rest, fatal = [], b"", None

def message(text):
    ids = re.search(rb"unhealthy \(stopped sending heartbeats\):\s*([\d\s]+)", text)
    if ids:
        names = ", ".join(ids.group(1).decode().split())
        return f"process {names} gave no sign of life (it died or hangs)"
    if b"leader task" in text or b"Failed to send RPC to coordination service" in text:
        return "lost the coordinator (process 0): it stopped or its machine is unreachable"
    status = re.search(rb"absl::Status: ([^\n]*)", text)
    return "JAX's distributed runtime failed: " + (status.group(1).decode(errors="replace")
                                                   if status else "see the other processes")

def say(text):
    os.write(1, f"purejaxppo: error: {label}: {message(text)}; the run cannot continue\n".encode())

while True:
    ready, _, _ = select.select([0], [], [], 0.25)
    chunk = os.read(0, 65536) if ready else None
    if chunk == b"":
        break
    if chunk:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            if fatal is not None:
                fatal.append(line)
            elif FATAL in line:
                fatal, held = [line], []
            else:
                held.append((time.monotonic(), line + b"\n"))
        if fatal is not None and any(b"stack trace" in x for x in fatal):
            say(b"\n".join(fatal))
            while os.read(0, 65536):
                pass
            sys.exit(0)
    while held and time.monotonic() - held[0][0] > 1.0:
        os.write(1, held.pop(0)[1])
if fatal is not None:
    say(b"\n".join(fatal))
else:
    os.write(1, b"".join(line for _, line in held) + rest)
"""
"""The reader of :func:`_filter_stderr`: passes stderr through, one second late, except JAX's
fatal log of a failed peer (and the log lines of the second before it), which become one line."""


def _filter_stderr(label: str) -> None:
    """Routes this process's stderr (file descriptor 2: Python's and the C++ runtime's) through
    :data:`STDERR_FILTER`, which ends when this process does."""
    _route_through(2, [sys.executable, "-c", STDERR_FILTER, label])


def _route_through(fd: int, reader: list[str]) -> None:
    """Makes ``fd`` of this process the writing end of a pipe that the command ``reader`` reads
    (its standard input), writing what it keeps to what ``fd`` was before."""
    (sys.stdout if fd == 1 else sys.stderr).flush()
    read_end, write_end = os.pipe()
    # A bare spawn, not a Popen: the reader outlives this process's interpreter, and a Popen
    # collected at exit while its process runs warns (ResourceWarning). It reads to the end of
    # the pipe, then exits, and is reaped by whoever inherits it.
    os.posix_spawn(reader[0], reader, os.environ,
                   file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0),
                                 (os.POSIX_SPAWN_DUP2, fd, 1),
                                 (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                                 (os.POSIX_SPAWN_CLOSE, write_end)])
    os.close(read_end)
    os.dup2(write_end, fd)
    os.close(write_end)


STDOUT_FILTER = r"""
import os, re
drop = re.compile(rb"\[Gloo\] Rank \d+ is connected to \d+ peer ranks")
rest = b""
while chunk := os.read(0, 65536):
    *lines, rest = (rest + chunk).split(b"\n")
    kept = b"".join(line + b"\n" for line in lines if not drop.match(line))
    if kept:
        os.write(1, kept)
os.write(1, rest)
"""
"""The reader of :func:`_filter_stdout`: passes stdout through line by line, except the line
gloo prints for each connection it makes ("[Gloo] Rank 0 is connected to 1 peer ranks...")."""


def _filter_stdout() -> None:
    """Routes this process's stdout (file descriptor 1) through :data:`STDOUT_FILTER`, which
    ends when this process does: the processes print only what the command prints."""
    _route_through(1, [sys.executable, "-c", STDOUT_FILTER])


def _watch(check: Callable[[], object]) -> None:
    threading.Thread(target=check, daemon=True, name="purejaxppo-watchdog").start()


_finished = threading.Event()
_done: Callable[[], None] = lambda: None  # noqa: E731  (set by _start_heartbeat)
DONE = "done"
"""A process's counter once it finished: the others stop watching it."""


def finish() -> None:
    """This process is done: it stops watching the others and tells them not to watch it (it
    may leave first, or wait at JAX's exit barrier while process 0 still writes)."""
    if not _finished.is_set():
        _finished.set()
        _done()


def _start_heartbeat(timeout_s: int) -> None:
    """Every :data:`BEAT_S` seconds: bump this process's counter in the coordinator's key-value
    store and read the others'; one unchanged for ``timeout_s`` seconds ends this process with
    one line naming it (unless it said :data:`DONE`). The coordinator (process 0) unreachable
    ends it too."""
    global _done
    import atexit

    import jax
    from jax._src import distributed

    client = distributed.global_state.client
    me, count = jax.process_index(), jax.process_count()
    key = f"purejaxppo/alive/{me}"
    writing = threading.Lock()  # DONE is the last value written, whichever thread gets there

    def done() -> None:
        with writing, contextlib.suppress(Exception):
            client.key_value_set(key, DONE, allow_overwrite=True)

    _done = done
    atexit.register(finish)  # runs before JAX's own exit handler (registered earlier)

    def beat() -> None:
        seen = {i: ("", time.monotonic()) for i in range(count) if i != me}
        n = 0
        while not _finished.wait(BEAT_S):
            n += 1
            try:
                with writing:
                    if _finished.is_set():
                        return
                    client.key_value_set(key, str(n), allow_overwrite=True)
                values = {i: _try_get(client, f"purejaxppo/alive/{i}") for i in seen}
            except Exception:
                if _finished.is_set():
                    return
                fail(f"process {me}: lost the coordinator (process 0): it stopped or its "
                     "machine is unreachable; the run cannot continue")
                return
            now = time.monotonic()
            for i, value in values.items():
                if value != seen[i][0] or value == DONE:
                    seen[i] = (value, now)
                elif now - seen[i][1] > timeout_s and not _finished.is_set():
                    fail(f"process {me}: process {i} gave no sign of life for {timeout_s} s (it "
                         "died or hangs); stopping, as the run cannot continue without it")

    _watch(beat)


def _try_get(client: object, key: str) -> str:
    """The value of ``key``, or "" while it is not set yet."""
    try:
        return client.key_value_try_get(key)
    except Exception as e:
        if "NOT_FOUND" in str(e).upper().replace(" ", "_"):
            return ""
        raise


def barrier(name: str) -> None:
    """Waits until every process gets here (nothing with one process)."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_writer() -> bool:
    """Whether this process writes the outputs and prints (process 0, or the only one)."""
    import jax

    return jax.process_index() == 0
