"""Helpers the kubectl command table's two modules share: a deadline-bound poll that reports the
last value it saw, and a running kubectl whose output a thread collects."""
import subprocess
import threading
import time


def eventually(fn, timeout=10, what="condition", check=bool, interval=0.2):
    """fn() until check(value); on the deadline an AssertionError naming what and the last value."""
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            last = fn()
            if check(last):
                return last
        except (AssertionError, KeyError, IndexError, TypeError, ValueError, StopIteration) as e:
            last = f"<{type(e).__name__}: {str(e).strip()[-400:]}>"
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {str(last)[:700]}")
        time.sleep(interval)


class Stream:
    """A running kubectl whose output (stdout+stderr) a thread collects."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def interactive(cls, k, *args):
        """kubectl `args` with its stdin kept open (attach -i, port-forward)."""
        return cls(subprocess.Popen([k.binary, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=k.env()))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self):
        return "\n".join(self.lines)

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def until(self, pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred(self.text):
                return self.text
            if self.proc.poll() is not None:
                time.sleep(0.3)  # the reader thread takes the last lines
                if pred(self.text):
                    return self.text
                break
            time.sleep(0.05)
        state = f"exited {self.proc.poll()}" if self.proc.poll() is not None else "still running"
        raise AssertionError(f"{what}: not seen within {timeout}s (kubectl {state}); output:\n{self.text[-1500:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
