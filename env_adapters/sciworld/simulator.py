"""One ScienceWorld JVM: start it with a capped heap, call it with a deadline, kill it for sure.

``scienceworld.ScienceWorldEnv`` starts its JVM through py4j's ``launch_gateway`` without a way to
pass JVM options and without exposing the process. We launch the same jar the same way
(``py4j.GatewayServer`` with ``--die-on-broken-pipe``, cwd = the package folder) but keep the
``Popen``, so we know the PID, can pass ``-Xmx``, and can kill the process.

Every call to the simulator runs on one helper thread and is awaited with a deadline: a JVM that
hangs is killed (which unblocks the thread), a JVM that died is noticed from the broken socket.
Either way the caller gets a ``SimulatorFault`` naming the reason, and this object is dead for good;
the game starts a new one.

No JVM outlives the interpreter: each process is killed by a ``weakref.finalize`` (run on garbage
collection and at interpreter exit), by a SIGTERM handler that chains to the previous one, and, if
Python itself is killed, by the JVM's own ``--die-on-broken-pipe`` watch of its stdin.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")

# pid -> process of every JVM started here and not yet killed
_LIVE: dict[int, subprocess.Popen] = {}
# re-entrant: the SIGTERM handler and garbage-collection finalizers run ``_kill`` on whatever the
# main thread was doing, which may be inside this lock
_LIVE_LOCK = threading.RLock()
_SIGTERM_INSTALLED = False
_PREVIOUS_SIGTERM: Any = None


class SimulatorFault(RuntimeError):
    """The JVM crashed, hung past its deadline, or failed inside a call. ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_heap(heap: str) -> str:
    """Validate a JVM heap size such as ``"256m"`` or ``"1g"`` (the value of ``-Xmx``)."""
    if not isinstance(heap, str) or not _HEAP_RE.match(heap):
        raise ValueError(
            f"jvm_heap={heap!r} is not a JVM heap size; use a number with an optional unit "
            f"k/m/g, e.g. '256m' or '1g'"
        )
    return heap


def _kill(proc: subprocess.Popen) -> None:
    # SIGKILL, not a polite stop: the simulator holds no state worth saving, and it may be hung
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def kill_all() -> None:
    """Kill every JVM this process started (used at exit and on SIGTERM)."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        _kill(proc)


def live_pids() -> list[int]:
    """PIDs of the JVMs this process started that have not been killed yet."""
    with _LIVE_LOCK:
        return sorted(_LIVE)


def _on_sigterm(signum: int, frame: Any) -> None:
    kill_all()
    previous = _PREVIOUS_SIGTERM
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        # default action: die of SIGTERM, as the process would have without us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_handler() -> None:
    global _SIGTERM_INSTALLED, _PREVIOUS_SIGTERM
    if _SIGTERM_INSTALLED or threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; --die-on-broken-pipe still covers us
    _PREVIOUS_SIGTERM = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _SIGTERM_INSTALLED = True


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Simulator:
    """A ScienceWorld JVM and its py4j connection.

    Args:
        heap: the JVM's maximum heap (``-Xmx``), e.g. ``"256m"``.
        jvm_options: further JVM options, e.g. ``("-XX:+UseSerialGC",)``.
    """

    def __init__(self, heap: str = "256m", jvm_options: Sequence[str] = ()):
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH

        self.heap = check_heap(heap)
        options = [f"-Xmx{heap}", *jvm_options]
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        try:
            port, proc = launch_gateway(
                classpath=JAR_PATH,
                javaopts=options,
                die_on_exit=True,
                cwd=BASEPATH,
                redirect_stderr=self._stderr,
                return_proc=True,
            )
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"could not start the ScienceWorld JVM with options {options}: {exc!r}. "
                f"Check that Java 17+ is installed (`java -version`) and the JVM options are valid."
            ) from exc
        self._proc: subprocess.Popen = proc
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        self._finalizer = weakref.finalize(self, _kill, proc)
        _install_sigterm_handler()
        try:
            self._gateway = JavaGateway(
                gateway_parameters=GatewayParameters(auto_field=True, port=port),
                java_process=proc,
            )
            self.server = self._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        except Exception as exc:
            self.kill()
            raise RuntimeError(f"the ScienceWorld JVM started but py4j failed: {exc!r}") from exc
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sciworld-jvm")
        self.fault: str | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self.fault is None and self._proc.poll() is None

    def resident_bytes(self) -> int:
        """The JVM's resident memory (VmRSS), 0 when it is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def call(self, fn: Callable[[Any], T], timeout: float | None, what: str) -> T:
        """Run ``fn(server)`` on the JVM within ``timeout`` seconds (None: no deadline).

        Raises SimulatorFault (and kills the JVM) if it hangs, died, or the call failed.
        """
        if self.fault is not None:
            raise SimulatorFault(self.fault)
        future = self._executor.submit(fn, self.server)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            reason = f"{what} timed out after {timeout:g} s; JVM {self.pid} was killed"
        except Exception as exc:  # py4j network/protocol errors, Java exceptions
            from py4j.protocol import Py4JJavaError

            # a dying JVM breaks the socket a moment before it can be reaped
            grace = 0.0 if isinstance(exc, Py4JJavaError) else 1.0
            try:
                returncode = self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                returncode = None
            if returncode is not None:
                reason = f"JVM {self.pid} {_describe_exit(returncode)} during {what}"
            else:
                reason = f"simulator error during {what}: {type(exc).__name__}: {exc}"
            errors = [line.strip() for line in self._stderr if line.strip()]
            if errors:
                reason += f" (JVM stderr: {errors[-1][:300]})"
        self.fault = reason
        self.kill()
        raise SimulatorFault(reason)

    def kill(self) -> None:
        """Kill the JVM and drop the connection. Safe to call twice."""
        if self.fault is None:
            self.fault = "the simulator was closed"
        self._finalizer()
        gateway = getattr(self, "_gateway", None)
        if gateway is not None:
            try:
                gateway.close()
            except Exception:  # the socket is already broken: nothing left to release
                pass
            # close() leaves the client "connected": every Java object collected later would try
            # to reach the dead JVM and log an error whose traceback keeps the caller's frames
            # (and the objects in them) alive for as long as the log record lives
            gateway._gateway_client.is_connected = False
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
