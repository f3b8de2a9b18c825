"""Generated hostile-input suite (issue 29): a small grammar of seeds and mutations (:mod:`.grammar`), the cases it
generates (:mod:`.cases`) and the harness that runs one case in-process and checks the invariants (:mod:`.harness`)."""
