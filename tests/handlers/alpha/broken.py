"""A handler module that fails while importing."""

import no_such_module_anywhere  # noqa: F401
