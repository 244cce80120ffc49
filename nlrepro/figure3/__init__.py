"""The paper's Figure 3: capture a non-local block's affinity, measure it, draw it."""
