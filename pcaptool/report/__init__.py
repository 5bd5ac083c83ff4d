"""`pcaptool report`: one self-contained HTML page (or rich tables) summarising a run.

`summary` computes every number with SQL over the tables of `pcaptool.query.tables` (the
same tables `pcaptool query` exposes, so each figure can be checked with a query);
`plots` draws them as inline SVG with matplotlib; `page` assembles the HTML and
`terminal` prints the same summary as rich tables.
"""
