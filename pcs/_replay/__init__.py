"""The parts of :mod:`pcs.replay` (internal API): each step of a replay in its own module.

Modules, bottom to top (each imports only from those above it in this list):

``refusal``
    :class:`~pcs._replay.refusal.Refusal`, how a step says a replay cannot go
    ahead; :mod:`pcs.replay` turns it into the error the user sees, naming the run;
``safety``
    checks made before anything is imported: the recorded path, the allowed
    modules (and the evidence that you recorded them), missing arguments,
    where each override goes;
``drift``
    :func:`~pcs._replay.drift.code_drift`: the recorded code identity against
    the current one;
``resolve``
    importing the module and walking ``module:qualname`` without running
    descriptors; refusing what is not ``@pcs.tracked``;
``inputs``
    arguments pcs could not record, taken from the logged return value of the
    call that produced them (lineage);
``arguments``
    the recorded arguments rebuilt: large values fetched and verified, trees
    decoded, bound to the current signatures;
``invoke``
    the call itself, through the tracker, on an event loop for async code;
``compare``
    :func:`~pcs._replay.compare.compare`: two runs side by side (the result
    types are in :mod:`pcs._comparison`).
"""
