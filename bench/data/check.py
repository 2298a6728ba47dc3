"""Validate a ViCo-layout folder: list every problem instead of stopping at the first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import formats
from .vico import ViCoDataset


@dataclass
class CheckReport:
    """What ``bench data check`` found: clips per split and every problem."""

    root: Path
    clips: dict[str, int] = field(default_factory=dict)
    good: dict[str, int] = field(default_factory=dict)
    problems: list[InputError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(root: str | Path) -> CheckReport:
    """Check every split CSV, every clip (both roles, both tasks) and the mean/std files."""
    root = Path(root)
    report = CheckReport(root=root)
    try:
        dataset = ViCoDataset(root)
    except InputError as exc:
        report.problems.append(exc)
        return report
    seen: dict[str, str] = {}
    for split in dataset.splits():
        try:
            rows = dataset.rows(split)
        except InputError as exc:
            report.problems.append(exc)
            continue
        report.clips[split] = len(rows)
        good = 0
        for row in rows:
            if row.uuid in seen:
                report.problems.append(InputError(
                    dataset._split_files()[split],
                    f"uuid {row.uuid} is also in split '{seen[row.uuid]}'",
                    fix="a clip belongs to one split only"))
            seen[row.uuid] = split
            _, n_frames, problems = dataset.inspect_clip(split, row, ("talking", "listening"))
            if n_frames is None and not problems:
                problems = [InputError(root, f"clip {row.uuid}: no video and no coefficients")]
            report.problems.extend(problems)
            good += not problems
        report.good[split] = good
    for name in ("video_feats_mean_std.bin", "audio_feats_mean_std.bin"):
        path = dataset._stats_file(name)
        if path is None:
            continue  # optional: `bench data stats` makes them
        try:
            formats.read_mean_std(path)
        except InputError as exc:
            report.problems.append(exc)
    if dataset._stats_file("video_feats_mean_std.bin") is not None:
        try:
            dataset.norm_stats()
        except InputError as exc:
            report.problems.append(exc)
    return report
