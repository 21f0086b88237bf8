"""pcs_lineage_svg: a picture of a top-level run's lineage, stored on the run for the MLflow UI.

A first-party pcs plugin, installed with pcs and registered through the
``pcs`` entry-point group under the name ``lineage_svg`` (disable it with
``PCS_DISABLE_PLUGINS=lineage_svg``). When a **top-level** run (a
``pcs.run()`` block or a tracked call with no run around it) ends, and
tracked calls inside its tree passed values to each other (output → input
lineage, see :mod:`pcs.lineage`), it stores the artifact ``pcs.lineage.svg``
on that run: every producer → consumer edge between the runs of the tree,
labelled with the argument the value went into (``model``, ``data[0]``),
drawn by Graphviz's ``dot``. The MLflow UI shows it in the run's artifacts.

What it costs:

* **No Graphviz, no cost.** ``dot`` is looked up on ``PATH`` once, when the
  plugin is loaded; without it the plugin registers with no hook at all.
* **No lineage, no cost.** As each run ends, the plugin notes in memory
  whether it returned a value lineage may follow
  (:func:`pcs.lineage.may_have_produced`): a few hundred nanoseconds, besides
  pluggy calling the hook. A top-level run is looked at only if, while it was
  open, such a call ended and another run ended after it; otherwise nothing
  more happens — no store read, no process started.
* **With lineage**, the end of the top-level run waits for its tree to reach
  the store (:func:`pcs.flush`, at most :data:`FLUSH_TIMEOUT` seconds), reads
  the edges back (:func:`pcs.lineage.tree_graph`), runs ``dot`` once and
  queues the artifact with the run's other records (``Run.log_bytes``): tens
  of milliseconds for a pipeline of a few calls. When the store is further
  behind than that (typically: MLflow still starting, seconds after the
  process did), the run is not held up: its picture is drawn at the end of a
  later top-level run once the store has caught up, or at exit before pcs's
  last delivery (:func:`draw_pending` does it at once).

It never raises into your program: a failure is logged once per process and
the run is left without its picture. Runs ended by an interruption (status
``KILLED``) are not drawn, so Ctrl-C is not held up. Calls made in other
processes (process pools) are not seen ending here: a tree whose only edges
lead to or from such calls may not be drawn. It uses only pcs's public names.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading

import pcs
import pcs.plugins
from pcs import conventions, lineage, settings
from pcs.hookspecs import hookimpl
from pcs.lineage import may_have_produced

__all__ = ["ARTIFACT", "DOT", "EXIT_TIMEOUT", "FLUSH_TIMEOUT", "PLUGIN", "LineageSvgPlugin",
           "draw", "draw_pending", "local_store", "plugin"]

#: the artifact the picture is stored as, on the top-level run
ARTIFACT = conventions.LINEAGE_SVG_ARTIFACT
#: Graphviz's ``dot`` program, looked up on PATH once, as the plugin is loaded (None: absent)
DOT = shutil.which("dot")
#: seconds the end of a top-level run with lineage waits for the store; the picture is
#: drawn later when that is not enough
FLUSH_TIMEOUT = 0.5
#: seconds the exit waits for the store before drawing the pictures left for later (at
#: most ``PCS_EXIT_FLUSH_TIMEOUT``)
EXIT_TIMEOUT = 30.0
#: seconds the end of a top-level run without lineage waits, while pictures are left for
#: later, to draw them
_CATCH_UP = 0.1
_log = logging.getLogger("pcs")


class LineageSvgPlugin:
    """The plugin's hooks, what it counts in memory, and the pictures left for later (one
    instance per process).

    ``dot``: the Graphviz program found on PATH (:func:`pcs.lineage.render` runs it).
    """

    def __init__(self, dot: str) -> None:
        self.dot = dot
        self._lock = threading.Lock()
        #: runs ended in this process that returned a value lineage may follow (producers)
        self._producers = 0
        #: whether a run ended since the last producer did (a possible consumer of its value)
        self._after = False
        #: id(top-level run) -> (the run, ``_producers`` when it started)
        self._open: dict[int, tuple[pcs.Run, int]] = {}
        #: top-level runs to draw once the store has caught up
        self._pending: list[pcs.Run] = []
        self._at_exit = False
        self._warned = False
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A forked child: a fresh lock, and none of its parent's pictures to draw."""
        self._lock = threading.Lock()
        self._pending = []

    @hookimpl
    def pcs_collect_environment(self, run: pcs.Run) -> None:
        """A top-level run started: remember how many producers had ended (no lock: one
        read and one dict store, each atomic; a producer ending meanwhile in another
        thread is counted or not, and either only decides whether to look for edges)."""
        self._open[id(run)] = (run, self._producers)

    @hookimpl
    def pcs_run_ended(self, run: pcs.Run, status: str) -> None:
        """Every run's end (the hot path: two checks and a store); a top-level run's may draw."""
        if self._open and id(run) in self._open:
            self._top_level_ended(run, status)
        if status == "FINISHED" and may_have_produced(run):
            with self._lock:
                self._producers += 1
                self._after = False
        else:
            self._after = True

    def _top_level_ended(self, run: pcs.Run, status: str) -> None:
        with self._lock:
            opened = self._open.pop(id(run), None)
            if opened is None:
                return
            # An edge inside the tree needs a producer that ended while the run was open,
            # and its consumer, which ended after it (a run receives a value only once the
            # call that returned it has ended, its end hook included).
            produced = self._producers - opened[1]
            maybe = produced > 1 or (produced == 1 and self._after)
            if maybe and status != "KILLED" and local_store(run):
                self._pending.append(run)
            elif not self._pending:
                return
        # pictures left for later are drawn now if the store has caught up by itself
        self.draw_pending(FLUSH_TIMEOUT if maybe else _CATCH_UP)

    def draw_pending(self, timeout: float) -> bool:
        """Draw the pictures left for later if the store catches up within ``timeout``
        seconds; else keep them for later (and for exit). False if some are left."""
        if not self._pending:
            return True
        if not pcs.flush(timeout):
            self._draw_at_exit()
            return False
        with self._lock:
            runs, self._pending = self._pending, []
        for run in runs:
            try:
                draw(run)
            except Exception as exc:  # never into the program: the run just has no picture
                self._warn(run, f"{type(exc).__name__}: {exc}")
        return True

    def _draw_at_exit(self) -> None:
        """Draw what is left at exit: registered after the writer, so run before it."""
        if self._at_exit:
            return
        self._at_exit = True
        atexit.register(self._exit)

    def _exit(self) -> None:
        timeout = min(EXIT_TIMEOUT, settings.EXIT_FLUSH_TIMEOUT.get())
        left = list(self._pending)
        if not self.draw_pending(timeout):
            for run in left:
                self._warn(run, f"its runs did not reach the store within {timeout:g} s")

    def _warn(self, run: pcs.Run, why: str) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        _log.log(level, "pcs lineage_svg: no %s on run %s (%s). Set PCS_DISABLE_PLUGINS="
                 "lineage_svg to turn the plugin off.", ARTIFACT, run, why)


def local_store(run: pcs.Run) -> bool:
    """Whether ``run`` lives in a store on this machine (SQLite, files): only there is it
    drawn at its end. Reading a tracking server back on the program's thread could wait
    for its retries; draw such runs with :func:`draw` or ``pcs lineage --format svg``."""
    uri = str(getattr(run, "tracking_uri", "") or "")
    if uri.startswith("databricks"):
        return False
    if "://" not in uri and not uri.startswith(("sqlite:", "file:")):
        return True  # a plain path: MLflow's file store
    return uri.split(":", 1)[0].lower() in ("sqlite", "file")


def draw(run: pcs.Run, timeout: float | None = None) -> bool | None:
    """Store the picture of the lineage inside ``run``'s tree as its artifact :data:`ARTIFACT`.

    Waits for the store (at most ``timeout`` seconds; None: as long as reads do,
    ``PCS_READ_TIMEOUT``), reads the edges back and draws them with Graphviz
    (:class:`pcs.lineage.GraphvizMissingError` without it). None when the tree
    has no edge: nothing is stored. False when the store did not catch up in
    time. The artifact is written behind, like the run's other records
    (:func:`pcs.flush` waits for it).
    """
    if timeout is not None and not pcs.flush(timeout):
        return False
    found = lineage.tree_graph(run)
    if not found.edges:
        return None
    run.log_bytes(lineage.render(found, "svg").encode(), ARTIFACT)
    return True


def draw_pending(timeout: float | None = None) -> bool:
    """Draw now the pictures the registered plugin left for later, waiting at most
    ``timeout`` seconds (default :data:`EXIT_TIMEOUT`) for the store. False if some are
    still left (they are drawn at exit)."""
    done = True
    for registered in pcs.plugins.list_plugins():
        if isinstance(registered.plugin, LineageSvgPlugin):
            wait = EXIT_TIMEOUT if timeout is None else timeout
            done = registered.plugin.draw_pending(wait) and done
    return done


class _WithoutGraphviz:
    """What is registered when Graphviz's ``dot`` is not on PATH: no hook, so runs pay nothing."""

    def __repr__(self) -> str:
        return "<pcs_lineage_svg: inactive, Graphviz's dot is not on PATH>"


def plugin(dot: str | None = DOT) -> object:
    """The object to register: :class:`LineageSvgPlugin` with ``dot``, a hookless one without."""
    return LineageSvgPlugin(dot) if dot else _WithoutGraphviz()


#: what the ``lineage_svg`` entry point registers
PLUGIN = plugin()
