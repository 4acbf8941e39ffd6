"""The task: a pure decider (``decider``), its history stamping (``history``) and its processor shell."""
