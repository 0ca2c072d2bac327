"""The study's analyses (STUDY.md A-I and ground-truth retrieval), figures and HTML report.

Pure functions of score matrices and small frozen dataclasses; only `inputs` reads files.

* `inputs`: the workdir contract — `QueryRecord`, `DocumentTable`, `ModelScores` and readers.
* `ranking`: the ranking score (score ÷ document-gradient norm by default), top-k, ranks.
* `families`: query kinds (factual / reasoning / control) and `FamilyIndex`.
* `correlation` (A), `cross_model` (B, E), `dependency` (C), `powerlaw` (D), `answers` (F),
  `categories` (G/H), `sources` (I), `retrieval` (ground truth of the procedural world).
* `study`: `AnalysisArgs` and `analyse_model`, every per-model analysis in one call.
* `summary`: results as `analysis/summary.json`; `browser`: the top documents per query.
* `figures`, `readings`, `report`: PNG figures, one-line readings, the self-contained page;
  `comparison`: the tables and readings that put influence next to each baseline.

The stages `infljax.stages.analysis` and `infljax.stages.report` wire them to the workdir.
"""
