"""Stage 3, eval: inference engines, predictions files, label extraction, metrics, scoring,
reports and plots, paired comparisons. May import data and train (to read run directories)."""
