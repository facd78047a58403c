"""Studies: comparisons built from runs and evaluations. Sweeps over recipe keys (a grid, paired
lists, or an Optuna search) with the base model as a row, checkpoint curves, and one report table
with confidence intervals and paired tests (Holm-corrected)."""
