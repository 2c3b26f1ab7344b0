"""What `ascend run` reports: one result per stage and the whole run, as JSON and as text."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# ok: ran and passed. skipped: its artifact was already complete for this recipe (or the recipe
# needs no such step). failed: ran and did not pass. blocked: not run because an earlier stage
# failed or did not run. not-run: outside --from/--until. interrupted: stopped by Ctrl-C while running.
StageStatus = Literal["ok", "skipped", "failed", "blocked", "not-run", "interrupted"]

STAGES = ("plan", "source", "convert", "verify", "serve", "smoke", "bench", "eval", "stop")

MARK = {"ok": "ok", "skipped": "skip", "failed": "FAIL", "blocked": "-", "not-run": "-", "interrupted": "INT"}
STYLE = {"ok": "green", "skipped": "cyan", "failed": "bold red", "blocked": "dim", "not-run": "dim", "interrupted": "bold red"}


@dataclass
class StageResult:
    stage: str
    status: StageStatus
    summary: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def line(self, width: int = 8) -> str:
        """``plan     ok    2 ranks ... (0.1 s)`` — the one-line summary printed per stage."""
        took = f" ({self.seconds:.1f} s)" if self.seconds >= 0.05 else ""
        return f"{self.stage:<{width}} {MARK[self.status]:<5} {self.summary}{took}"


@dataclass
class RunReport:
    recipe: str
    recipe_hash: str
    run_dir: str
    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0
    started_at: str = ""

    @property
    def failed(self) -> list[StageResult]:
        return [s for s in self.stages if s.status == "failed"]

    @property
    def interrupted(self) -> list[StageResult]:
        return [s for s in self.stages if s.status == "interrupted"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def verdict(self) -> str:
        done = [s.stage for s in self.stages if s.status in ("ok", "skipped")]
        asked = [s for s in self.stages if s.status != "not-run"]
        if self.interrupted:
            head = f"INTERRUPTED during {self.interrupted[0].stage}"
        elif self.failed:
            head = f"FAILED at {self.failed[0].stage}"
        else:
            head = "OK"
        return f"{head} — {len(done)} of {len(asked)} stages done in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "recipe_hash": self.recipe_hash,
            "run_dir": self.run_dir,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "verdict": self.verdict(),
            "stages": [asdict(s) | {"seconds": round(s.seconds, 3)} for s in self.stages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def to_text(self) -> str:
        lines = [f"ascend run {self.recipe} (recipe hash {self.recipe_hash}, started {self.started_at})", ""]
        for s in self.stages:
            lines.append(s.line())
            # the smoke stage's checks, one line each (details["checks"]: name -> status, detail)
            for name, check in (s.details.get("checks") or {}).items():
                lines.append(f"{'':9}{name:<24} {check.get('status', '?'):<5} {check.get('detail', '')}".rstrip())
        lines += ["", self.verdict()]
        return "\n".join(lines) + "\n"
