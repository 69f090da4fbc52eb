"""Experiment entry points that are part of the installed package (and of the ``gpt2probe`` command)."""
