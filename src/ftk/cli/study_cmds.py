"""Study commands: study run, study report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftk.cli.app import app

study_app = typer.Typer(help="Sweeps and comparisons: trials as runs, one table with CIs and paired tests.",
                        no_args_is_help=True)
app.add_typer(study_app, name="study")


@study_app.command("run")
def study_run_cmd(
    study: Annotated[Path, typer.Argument(help="study YAML")],
    out: Annotated[Optional[Path], typer.Option(help="study folder (default runs/study-<name>)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the trials and their overrides only")] = False,
    slurm: Annotated[bool, typer.Option("--slurm", help="submit the trials as one SLURM job array")] = False,
    trial: Annotated[Optional[int], typer.Option(min=0, help="run only the trial at this index (array tasks)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help=f"run a study of more trials than usual (over {64})")] = False,
) -> None:
    """Train and evaluate every trial as a normal run; finished trials are skipped, so an interrupted
    study resumes. The report (table, CIs, paired tests, plots) is written at the end.

    Examples:\n
      ftk study run studies/s0_agnews_lr_tiny.yaml\n
      ftk study run studies/s0_agnews_lr.yaml --dry-run
    """
    from ftk.study.run import run_study

    run_study(study, out=out, dry_run=dry_run, slurm=slurm, only=trial, yes=yes)


@study_app.command("report")
def study_report_cmd(
    study_dir: Annotated[Path, typer.Argument(help="study folder (made by `ftk study run`)")],
) -> None:
    """One table of a study's trials: headline metric with its 95% CI, invalid rate, train time, and
    Holm-corrected McNemar and paired-bootstrap tests against the best trial and the base model.

    Examples:\n
      ftk study report runs/study-s0_agnews_lr_tiny\n
      ftk study report /scratch/me/study-s0_agnews_lr
    """
    from ftk.study.report import print_report, study_report

    print_report(study_report(study_dir))
