"""`headwater up` as a subprocess whose printed lines tests read (tests/test_up.py,
tests/test_console_browser.py)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from hw_testing import BIN, cli_env


class UpProcess:
    """A running `headwater up` whose stdout is read line by line in the background."""

    def __init__(self, data_dir: Path) -> None:
        env = cli_env()
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        self.env = env
        self.process = subprocess.Popen(
            [str(BIN / "headwater"), "up", "--data-dir", str(data_dir),
             "--edge-port", "0", "--control-port", "0", "--nats-port", "0",
             "--operator-port", "0", "--consumer-port", "0", "--sessionizer-port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not printed within {timeout}s:\n" + "\n".join(self.output))

    def command_after(self, heading: str) -> str:
        index = self.output.index(heading)
        return self.output[index + 1].strip()

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=self.env, timeout=60
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.wait_for_exit_output()
        return code

    def wait_for_exit_output(self) -> None:
        while True:
            try:
                self.output.append(self.lines.get(timeout=1))
            except queue.Empty:
                return
