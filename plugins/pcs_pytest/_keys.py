"""Keys shared by the plugin's modules.

No pcs import at run time here: the plugin stays inert until it is enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pcs

#: Where the run of a test is kept on its item (``item.stash[RUN_KEY]``).
RUN_KEY: pytest.StashKey[pcs.Run] = pytest.StashKey()
