"""The read side: what looks at a prepared directory after `tessera prepare` wrote it, and never writes into it.

Build-side modules (load -> formats -> render -> encode -> transform -> rowpass -> table -> stages -> shards,
outputs -> pipeline) live in dataprep/ and make the directory; everything here opens the finished version
read-only (outdir.open_prepared_dir: one version from start to end, even while a `prepare --force` replaces
it) and answers questions about it. It is its own package so that a reader can tell at a glance which code
can change the prepared bytes (not this) and which only reads them:

    prepared.py            a prepared directory as Arrow tables: manifest, shards (memory-mapped), tokenizer file
    vocab.py               the saved tokenizer's vocabulary with each token's exact bytes
    query.py               `tessera query DIR SQL`: DuckDB views over the directory, the sql/ library, --param
    results.py             a query result as a box table, CSV or JSON
    inspect_tokens.py      `tessera inspect DIR`: the tokens of a packed row or sample, trained vs masked
    html.py                page style, inline SVG charts, tables and cards (also used by train/report.py)
    html_report.py         `tessera report DIR`: one self-contained HTML page from the sql/ library
    near_dedup_report.py   near-dedup's report section and the cluster `inspect --sample` names
    golden.py, golden_refs.py   `tessera golden CONFIG`: training ids and labels vs the inference path on samples
                           of the data (the one tool here that reads the config's inputs instead of a prepared
                           directory: it checks what prepare would write, and writes nothing either)
"""
