"""Packaging. Metadata, dependencies, entry points and tool settings live in setup.cfg.

The packages are found here because setup.cfg's ``find:`` searches one folder
only: ``pcs`` (and its subpackages) at the top, plus every first-party plugin
package under ``plugins/`` (``plugins/pcs_pytest`` installs as ``pcs_pytest``).
"""

from setuptools import find_packages, setup

PLUGINS = find_packages("plugins")

setup(
    packages=find_packages(include=["pcs", "pcs.*"]) + PLUGINS,
    package_dir={name: "plugins/" + name.replace(".", "/") for name in PLUGINS},
)
