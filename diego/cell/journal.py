"""What of a container's action tree is done, in a file: a restarted cell resumes it.

Each step of the tree has a key, its path from the root ("0", "0.1", "0.1.0"). As
a step ends, one line records it (its failure reason, or none); a timeout step
records when it began, so a resumed timeout keeps its deadline. A cell that was
killed and restarted performs the tree again with the journal of the earlier
run: a step recorded is not performed again (it ends as it ended), a run step
that had started is found again in the backend (``Backend.attach``) rather than
started twice, and the rest runs as it would have. A TES job
(``diego.cell.tes_job``) keeps its parts in a journal the same way, each part's
outcome being what it recorded as it ended (an executor's log, as JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    """The step journal of one container."""

    def __init__(self, path: Path, resumed: bool = False) -> None:
        self.path = path
        self.resumed = resumed
        """Whether an earlier run of the cell began this tree."""
        self._done: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._fd: int | None = None

    @classmethod
    def resume(cls, path: Path) -> Journal:
        """The journal an earlier run wrote at ``path`` (empty if it wrote none)."""
        journal = cls(path, resumed=True)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return journal
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line, cut short by the kill
            if "r" in entry:
                journal._done[entry["k"]] = entry["r"]
            elif "t" in entry:
                journal._started.setdefault(entry["k"], entry["t"])
        return journal

    @property
    def empty(self) -> bool:
        """Whether no step has been recorded."""
        return not self._done and not self._started

    def outcome(self, key: str) -> str | None:
        """None if step ``key`` has not ended; else its failure reason ("" if it passed)."""
        return self._done.get(key)

    def ended(self, key: str, reason: str) -> None:
        """Step ``key`` ended: passed (``reason`` "") or failed for ``reason``."""
        self._done[key] = reason
        self._write({"k": key, "r": reason})

    def began(self, key: str, now: float) -> float:
        """When step ``key`` first began (``now``, if this is its first time)."""
        started = self._started.get(key)
        if started is None:
            started = self._started[key] = now
            self._write({"k": key, "t": now})
        return started

    def open(self) -> None:
        """Make the file now (empty for a new tree), before any step ends."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A new tree's journal starts empty: one an earlier container of the
            # same guid left (its cell died before deleting it) is not this one's.
            fresh = 0 if self.resumed else os.O_TRUNC
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | fresh, 0o600)

    def close(self) -> None:
        """Stop writing (the file stays until ``remove``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Close and delete the journal: its container is gone."""
        self.close()
        self.path.unlink(missing_ok=True)

    def _write(self, entry: dict[str, object]) -> None:
        # One append per step, no fsync: a node killed mid-write loses at most the
        # line, and the step then runs (or is found in the backend) again.
        self.open()
        assert self._fd is not None
        os.write(self._fd, (json.dumps(entry) + "\n").encode())
