"""The built-in ``native`` plugin: shieldkit's own attacks, defences, models and datasets.

It registers through the same hooks as any third-party plugin. Each subpackage
keeps the one tuple that lists what it offers.
"""

from shieldkit.plugins.hookspecs import hookimpl


@hookimpl
def register_attacks(register):
    from shieldkit import gan
    from shieldkit.attacks import ATTACKS

    for attack in ATTACKS + gan.ATTACKS:
        register(attack)


@hookimpl
def register_defenses(register):
    from shieldkit import gan
    from shieldkit.defenses import DEFENSES

    for defense in DEFENSES + gan.DEFENSES:
        register(defense)


@hookimpl
def register_models(register):
    from shieldkit import gan
    from shieldkit.models import MODELS

    for factory in MODELS + gan.MODELS:
        register(factory)


@hookimpl
def register_datasets(register):
    from shieldkit.data import DATASETS

    for loader in DATASETS:
        register(loader)
