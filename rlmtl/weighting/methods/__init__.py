"""One file per weighting method, each registered by name with `@register_weighting`.

Importing this package imports every module in it, so a new method is one new file here.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
