"""The install stage: built wheels put into a target environment, journalled, and rolled back on failure.

A reader finds each job in its own module:

- ``target``: the environment, as its own interpreter describes it (``_probe.py``).
- ``tags``: the wheel tags the target's interpreter supports, best first.
- ``select``: which wheel files an install takes: those given, and one per pin of its -r locks.
- ``conflicts``: two distributions of one run that would write the same file.
- ``wheel``: a wheel read and checked against RECORD, and the files installing it creates.
- ``installer``: the algorithm of one wheel (:class:`WheelInstaller`), and of a batch (:func:`install_all`).
- ``results``: what the stage reports (:data:`INSTALLS`: each wheel's result and its event line).
- ``rollback``: the files an install writes and the old ones it moves aside, so it can be undone.
- ``journal``: the crash journal that lets the next run undo an install killed part-way.
- ``bytecode``: the pool of compiler processes of the target's interpreter (``_compile_server.py``).
- ``deadline``: one wheel's timeout and its turn to write.

Nothing is imported here: ``installer`` imports pypa ``installer``, which only a run that installs needs.
"""
