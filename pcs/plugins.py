"""pcs's plugins: finding, registering and calling them (on pluggy).

A plugin implements some of the hooks of :mod:`pcs.hookspecs`. It is found
through the ``pcs`` entry-point group of an installed distribution::

    # setup.cfg of the plugin's distribution
    [options.entry_points]
    pcs =
        myplugin = my_package.pcs_plugin

or registered in code with :func:`register`. Entry-point plugins are loaded
on first need — the first ``pcs.run()`` block or tracked call, or the first
call of this module's functions — never at ``import pcs``. The environment
variable ``PCS_DISABLE_PLUGINS`` (see :mod:`pcs.settings`) names plugins not
to load (comma-separated), or is ``all``.

**A plugin never breaks your program.** Each implementation is called on its
own; one that raises is logged once per plugin and hook (naming both) and
the others go on, as does the run. The exception is a failing
``pcs_arguments_captured``: it *fails closed* — that call's arguments are all
recorded redacted.

**No plugin, no cost.** With no plugin registered, a tracked call pays no
more than it did before plugins existed: the hooks are reached through the
same flag checks as :func:`pcs.testing.capture_runs`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from pcs import _events, hookspecs, settings
from pcs._canon import EXTENSIONS, RegistryView
from pcs.exceptions import UsageError
from pcs.hookspecs import hookimpl
from pcs.run import known_parent_id
from pcs.secret import Secret

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = [
    "ENTRY_POINT_GROUP",
    "EncoderRegistry",
    "PluginInfo",
    "environment_drift",
    "hookimpl",
    "list_plugins",
    "load",
    "manager",
    "register",
    "unregister",
]

_log = logging.getLogger("pcs")

#: the entry-point group pcs plugins are published in
ENTRY_POINT_GROUP = hookspecs.PROJECT
#: the value of PCS_DISABLE_PLUGINS that disables every plugin
ALL = "all"
#: the hooks reached through the run events (pcs._events)
_RUN_HOOKS = ("pcs_run_started", "pcs_run_ended", "pcs_collect_environment")

_lock = threading.RLock()


def _renew_lock_in_child() -> None:
    """A forked child gets a fresh lock (the parent's may be held by a thread that is gone)."""
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_renew_lock_in_child)
_manager: pluggy.PluginManager | None = None
#: name -> "distribution version" of the plugins loaded from entry points
_sources: dict[str, str] = {}
#: (plugin name, hook name) pairs whose failure was logged already
_failed: set[tuple[str, str]] = set()
#: names of the plugins already given the encoder registry
_encoders_given: set[str] = set()
_subscribed = False
#: hook name -> its implementations in call order, as of the last _publish
_impls: dict[str, tuple[Any, ...]] = {}
#: the run hooks' implementations made ready for the hot path at _publish:
#: hook name -> ``(plugin name, call(run, status, error))`` in call order
_run_calls: dict[str, tuple[tuple[str, Callable[[Any, Any, Any], Any]], ...]] = {
    name: () for name in ("pcs_run_started", "pcs_run_ended", "pcs_collect_environment")}
#: plugin name -> (what its pcs_collect_environment returned last, a copy of it to tell
#: whether it was changed since, that checked as (tags, params, artifacts))
_environment_seen: dict[str, tuple[Any, dict[str, Any], tuple[dict[str, str], Any, Any]]] = {}


class PluginInfo(NamedTuple):
    """A registered plugin, as :func:`list_plugins` lists it."""

    #: the name it is registered under (an entry point's name, or the name given to register)
    name: str
    #: the plugin object (often a module)
    plugin: object
    #: ``"distribution version"`` for a plugin loaded from an entry point, else None
    distribution: str | None


#: the registry plugins' pcs_register_encoders hooks fill (pcs.canon.extensions); each
#: plugin receives a view of it that records the plugin as the owner of what it registers
encoders = EXTENSIONS
#: the type of what pcs_register_encoders receives
EncoderRegistry = RegistryView


def manager() -> pluggy.PluginManager:
    """The ``pluggy.PluginManager`` behind pcs's plugins (entry-point plugins loaded)."""
    load()
    return _get_manager()


def _get_manager() -> pluggy.PluginManager:
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            _manager = pm
        return _manager


def _disabled() -> frozenset[str]:
    return settings.DISABLE_PLUGINS.get()


def load() -> None:
    """Load the plugins of the ``pcs`` entry-point group, once per process.

    pcs calls this itself when the first run starts; calling it earlier only
    moves that cost. A plugin that cannot be imported or registered is
    logged and left out. ``PCS_DISABLE_PLUGINS`` is read here.
    """
    with _lock:
        if _events.plugins_loaded:
            return
        pm = _get_manager()
        disabled = _disabled()
        if ALL not in disabled:
            try:
                _load_entry_points(pm, disabled)
            except Exception:
                _log.exception("pcs: could not list the %r entry points; no plugin loaded "
                               "from them.", ENTRY_POINT_GROUP)
        _publish(pm)


def _load_entry_points(pm: pluggy.PluginManager, disabled: frozenset[str]) -> None:
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if name in disabled or pm.has_plugin(name):
            continue
        dist: Any = getattr(entry_point, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
        try:
            plugin = entry_point.load()
            pm.register(plugin, name=name)
        except Exception:
            _log.exception(
                "pcs: could not load the plugin %r (%s, entry point %r); pcs goes on "
                "without it. Fix or uninstall it, or set PCS_DISABLE_PLUGINS=%s.",
                name, source, entry_point.value, name,
            )
            continue
        _sources[name] = source


def register(plugin: object, name: str | None = None) -> str | None:
    """Register ``plugin`` (a module or any object with hook implementations).

    Returns the name it is registered under (``name``, else pluggy's
    canonical name: the module's ``__name__`` or the object's id), or None
    when ``PCS_DISABLE_PLUGINS`` disables it. Raises
    :class:`~pcs.exceptions.UsageError` if the plugin or its name is
    registered already, or if a hook implementation does not match
    :mod:`pcs.hookspecs`.
    """
    load()
    with _lock:
        pm = _get_manager()
        plugin_name = name or pm.get_canonical_name(plugin)
        disabled = _disabled()
        if ALL in disabled or plugin_name in disabled:
            _log.info("pcs: plugin %r not registered: PCS_DISABLE_PLUGINS=%s.",
                      plugin_name, ",".join(sorted(disabled)))
            return None
        try:
            registered = pm.register(plugin, name=plugin_name)
        except ValueError as exc:
            raise UsageError(
                f"pcs.plugins.register: {exc}. Unregister it first "
                "(pcs.plugins.unregister), or give another name."
            ) from None
        except pluggy.PluginValidationError as exc:
            raise UsageError(
                f"pcs.plugins.register: plugin {plugin_name!r} does not match pcs's hooks: "
                f"{exc}. See pcs.hookspecs for each hook's arguments."
            ) from None
        _publish(pm)
        return registered


def unregister(plugin: object) -> None:
    """Unregister a plugin, given as the object or the name it is registered under.

    A plugin that is not registered is ignored.
    """
    with _lock:
        pm = _get_manager()
        name = plugin if isinstance(plugin, str) else pm.get_name(plugin)
        if name is not None and pm.get_plugin(name) is not None:
            pm.unregister(name=name)
            EXTENSIONS.unregister_owner(name)
            _encoders_given.discard(name)
        _publish(pm)


def list_plugins() -> list[PluginInfo]:
    """The registered plugins, in the order they were registered."""
    load()
    with _lock:
        return [
            PluginInfo(name, plugin, _sources.get(name))
            for name, plugin in _get_manager().list_name_plugin()
        ]


# -- calling the hooks -------------------------------------------------------------------
def _publish(pm: pluggy.PluginManager) -> None:
    """Make the hot path see the registered plugins (called under _lock)."""
    global _subscribed, _impls, _run_calls
    hook = pm.hook
    _impls = {name: tuple(reversed(getattr(hook, name).get_hookimpls()))
              for name in (*_RUN_HOOKS, "pcs_arguments_captured", "pcs_environment_drift")}
    _run_calls = {name: tuple(_run_call(impl, name) for impl in _impls[name]
                              if _callable(impl, name)) for name in _RUN_HOOKS}
    _environment_seen.clear()
    needs_events = any(_impls[name] for name in _RUN_HOOKS)
    if needs_events and not _subscribed:
        _events.subscribe(_observe)
    elif not needs_events and _subscribed:
        _events.unsubscribe(_observe)
    _subscribed = needs_events
    _give_encoders(pm)
    arguments_hook = _arguments if _impls["pcs_arguments_captured"] else None
    _events.set_plugin_state(True, arguments_hook)


def _callable(impl: Any, hook_name: str) -> bool:
    """False (logged once) for a wrapper implementation: pcs's hooks do not support them."""
    if impl.hookwrapper or impl.wrapper:
        _failed_once(impl.plugin_name, hook_name,
                     UsageError("wrapper implementations are not supported by pcs hooks"),
                     "it is not called")
        return False
    return True


def _run_call(impl: Any, hook_name: str) -> tuple[str, Callable[[Any, Any, Any], Any]]:
    """``(plugin name, call(run, status, error))`` for a run hook's implementation: the
    arguments it names picked once, not on every call."""
    fn, names = impl.function, tuple(impl.argnames)
    call: Callable[[Any, Any, Any], Any]
    if names == ("run",):
        def call(run: Any, status: Any, error: Any) -> Any:
            return fn(run)
    elif names == ("run", "status"):
        def call(run: Any, status: Any, error: Any) -> Any:
            return fn(run, status)
    elif names == ("run", "status", "error"):
        call = fn
    else:
        def call(run: Any, status: Any, error: Any) -> Any:
            given = {"run": run, "status": status, "error": error}
            return fn(*[given[name] for name in names])
    return impl.plugin_name, call


def _give_encoders(pm: pluggy.PluginManager) -> None:
    """Call each plugin's ``pcs_register_encoders`` once."""
    for impl in pm.hook.pcs_register_encoders.get_hookimpls():
        if impl.plugin_name in _encoders_given:
            continue
        _encoders_given.add(impl.plugin_name)
        ok, _ = _call_one(impl, "pcs_register_encoders",
                          {"registry": EXTENSIONS.view(impl.plugin_name)},
                          "its encoders are not used")
        if not ok:  # all or nothing: a half-registered plugin would encode some types only
            EXTENSIONS.unregister_owner(impl.plugin_name)


def _failed_once(plugin_name: str, hook_name: str, exc: BaseException, what: str) -> None:
    key = (plugin_name, hook_name)
    if key in _failed:
        _log.debug("pcs: plugin %r failed again in %s: %r", plugin_name, hook_name, exc)
        return
    _failed.add(key)
    _log.error(
        "pcs: plugin %r failed in hook %s (%s: %s); %s. Logged once per plugin and hook; "
        "fix the plugin, or set PCS_DISABLE_PLUGINS=%s.",
        plugin_name, hook_name, type(exc).__name__, exc, what, plugin_name,
        exc_info=exc,
    )


def _call_one(impl: Any, hook_name: str, kwargs: Mapping[str, Any],
              what: str = "pcs goes on") -> tuple[bool, Any]:
    """Call one implementation; ``(True, result)``, or ``(False, None)`` if it raised."""
    if not _callable(impl, hook_name):
        return False, None
    try:
        return True, impl.function(*[kwargs[name] for name in impl.argnames])
    except Exception as exc:
        _failed_once(impl.plugin_name, hook_name, exc, what)
        return False, None


def _call_each(hook_name: str, kwargs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Call every implementation of a hook in pluggy's order, each on its own."""
    results = []
    for impl in _impls.get(hook_name, ()):
        ok, result = _call_one(impl, hook_name, kwargs)
        if ok:
            results.append((impl.plugin_name, result))
    return results


def _observe(event: str, run: Run, status: str | None, exc: BaseException | None) -> None:
    """The run events (pcs._events) turned into hook calls (the hot path of every call)."""
    calls = _run_calls
    if event == "start":
        for plugin_name, call in calls["pcs_run_started"]:
            try:
                call(run, None, None)
            except Exception as err:
                _failed_once(plugin_name, "pcs_run_started", err, "pcs goes on")
        if calls["pcs_collect_environment"] and known_parent_id(run) is None:
            _collect_environment(run)
        return
    for plugin_name, call in calls["pcs_run_ended"]:
        try:
            call(run, status, exc)
        except Exception as err:
            _failed_once(plugin_name, "pcs_run_ended", err, "pcs goes on")


def _collect_environment(run: Run) -> None:
    hook_name = "pcs_collect_environment"
    for plugin_name, call in _run_calls[hook_name]:
        try:
            found = call(run, None, None)
        except Exception as err:
            _failed_once(plugin_name, hook_name, err, "pcs goes on")
            continue
        if found is None:
            continue
        try:
            seen = _environment_seen.get(plugin_name)
            if seen is not None and seen[0] is found and seen[1] == found:
                tags, params, artifacts = seen[2]  # the same answer again: checked once
            else:
                tags, params, artifacts = _checked_environment(found)
                _environment_seen[plugin_name] = (found, _snapshot(found),
                                                  (tags, params, artifacts))
            if tags:
                run.set_tags(tags)
            if params:
                run.log_params(params)
            for path, data in artifacts:
                run.log_bytes(data, path)
        except Exception as exc:
            _failed_once(plugin_name, hook_name, exc, "what it returned is not (all) recorded")


def _snapshot(found: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an answer, two levels deep: compares unequal once the answer is changed."""
    return {key: dict(value) if isinstance(value, Mapping) else value
            for key, value in found.items()}


def _checked_environment(found: Any) -> tuple[dict[str, str], Any, list[tuple[str, bytes]]]:
    """A ``pcs_collect_environment`` answer as (tags, params, artifacts); raises if malformed."""
    if not isinstance(found, Mapping):
        raise TypeError(f"returned {type(found).__name__}, not a mapping or None")
    tags = {str(k): str(v) for k, v in (found.get("tags") or {}).items()}
    artifacts = [(str(path), bytes(data))
                 for path, data in (found.get("artifacts") or {}).items()]
    return tags, found.get("params"), artifacts


def environment_drift(run: Run) -> list[str]:
    """Every plugin's ``pcs_environment_drift`` lines for replaying ``run`` in this process.

    A plugin that raises or returns something else than strings is logged once and left out.
    """
    load()
    lines: list[str] = []
    for plugin_name, found in _call_each("pcs_environment_drift", {"run": run}):
        if not found:
            continue
        if isinstance(found, str) or not all(isinstance(line, str) for line in found):
            _failed_once(plugin_name, "pcs_environment_drift",
                         TypeError("did not return a sequence of str"), "its lines are left out")
            continue
        lines.extend(found)
    return lines


def _arguments(parent: Run | None, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments to record after every ``pcs_arguments_captured`` (fails closed)."""
    hook_name = "pcs_arguments_captured"
    current = dict(arguments)
    what = "the call's arguments are all recorded redacted (failing closed)"
    for impl in _impls.get(hook_name, ()):
        ok, result = _call_one(impl, hook_name,
                               {"run": parent, "name": name, "arguments": current}, what)
        if ok and result is not None and not isinstance(result, Mapping):
            _failed_once(impl.plugin_name, hook_name,
                         TypeError(f"returned {type(result).__name__}, not a mapping or None"),
                         what)
            ok = False
        if not ok:
            return {key: Secret(value) for key, value in arguments.items()}
        if result is not None:
            current = dict(result)
    return current
