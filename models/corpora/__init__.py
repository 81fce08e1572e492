"""Real text for the authorship models: tokenisation, loaders, chapters and chunks, word counts.

=====================  =====================================================================
module                 what it holds
=====================  =====================================================================
``tokens``             the word and character tokenisers (documented rules)
``texts``              plain-text files and JSONL manifests (``file``, ``author``), the bundled data
``federalist``         the Federalist Papers: labels, editorial cleaning, M&W's 70 function words
``chunks``             chapters, fixed-size word chunks, the train / held-out split by chapter
``features``           word lists and the ``[D, W]`` count matrix of the word-rate models
=====================  =====================================================================

The bundled example data (``models/data/authorship/``: the Federalist Papers whole, five
novelists trimmed) are described in its PROVENANCE.md.
"""
