"""From finished runs to the paper's tables: collect summaries, render tables and plots."""
