"""The hooks a shieldkit plugin may implement.

Hooks are called with keyword arguments. They may gain arguments in later
versions, never lose or rename them; an implementation names only the arguments
it uses. Each ``register_*`` hook receives a ``register`` callback that validates
what it is given at once: a wrong type, a bad family name or a duplicate is
reported against the plugin that registered it. ``shieldkit_run_finished`` is an
event: it is told about a finished evaluation.

The markers live here too (``hookimpl`` is ``shieldkit.hookimpl``): this module
imports nothing of shieldkit, so a plugin, built-in or not, can mark its hooks
without importing the plugin manager that loads it.
"""

import pluggy

#: pluggy's project name, shared by both markers and the plugin manager.
PROJECT = "shieldkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_attacks(register):
    """Register attack classes.

    Args:
        register: call ``register(AttackSubclass)`` once per attack. The class
            must subclass :class:`shieldkit.Attack` and set ``family``; it is
            listed as ``family.<plugin name>``.
    """


@hookspec
def register_defenses(register):
    """Register defence classes.

    Args:
        register: call ``register(DefenseSubclass)`` once per defence. The class
            must subclass one of :class:`shieldkit.TransformDefense`,
            :class:`shieldkit.PostprocessDefense`, :class:`shieldkit.DetectorDefense`
            or :class:`shieldkit.TrainerDefense` and set ``family``.
    """


@hookspec
def register_models(register):
    """Register model factories.

    Args:
        register: call ``register(factory, name=None)``. ``factory(**params)``
            returns an ``nn.Module``; the family is ``name``, else the factory's
            ``family`` attribute, else its ``__name__``.
    """


@hookspec
def register_datasets(register):
    """Register dataset loaders.

    Args:
        register: call ``register(loader, name=None)``. ``loader(split=..., root=..., **params)``
            returns a :class:`shieldkit.data.ImageData`; named like model factories.
    """


@hookspec
def shieldkit_run_finished(summary, out_dir):
    """An evaluation finished: send its results on (an experiment tracker, a spreadsheet, a chat).

    Called once per finished run, after ``summary.json``, the CSV exports and the reports are written (under
    ``torchrun``, on rank 0 only); not called by ``shieldkit report DIR``, which rebuilds a run already
    finished (a ``--resume`` that completes a run is its finish; one of a run already finished tells it
    again). An error it raises is recorded against the plugin (``shieldkit plugins``) and never fails the run;
    with ``SHIELDKIT_STRICT_PLUGINS=1`` it raises ``PluginError``.

    Args:
        summary: the content of ``summary.json`` as plain JSON data (dicts, lists, strings, numbers, ``None``;
            accuracies are fractions in [0, 1]); a copy of its own for each plugin.
        out_dir: the run's folder (a :class:`pathlib.Path`), holding ``summary.json``, ``summary.csv``,
            ``results.csv``, ``results.jsonl``, ``report.md`` and ``report.html``.
    """
