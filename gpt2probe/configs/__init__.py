"""One config dataclass per long-running job: its keyword arguments, command-line flags and saved metadata.

As SAELens's runner config and tuned-lens's ``TunedLensConfig``: a setting is declared once,
as a field with its help text (:func:`~.base.setting`), and everything else is derived:
the keyword arguments a Python caller passes, the ``gpt2probe COMMAND`` flags
(:func:`~.base.add_arguments`), and the JSON saved with the result (:func:`~.base.to_dict`,
read back by :func:`~.base.from_dict`). Nothing here imports torch, so the command line can
build its parsers at once.
"""
