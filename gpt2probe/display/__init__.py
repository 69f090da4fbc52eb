"""How results show themselves as text and HTML: escaping, and HTML tables.

A leaf below the core: it imports nothing else of gpt2probe, and not Plotly, so a result
object's ``_repr_html_`` (in :mod:`gpt2probe.lens`, :mod:`gpt2probe.cache`...) costs no figure
module. :mod:`~gpt2probe.display.escape` makes every string display literally (in Plotly's
text and in a page's HTML); :mod:`~gpt2probe.display.tables` holds every HTML table. The
figures and report pages built on them are in :mod:`gpt2probe.report`.
"""
