"""Loading kohya-ss/sd-scripts' own code from a checkout for the fixture generators (no copy of it lives here)."""
import importlib.util
import os
import subprocess
import sys
import types


def commit_of(checkout):
    """The checkout's git commit, or the COMMIT file of an exported tree."""
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        with open(os.path.join(checkout, "COMMIT")) as f:
            return f.read().strip()


def import_custom_train_functions(checkout, stub_diffusers=False):
    """library/custom_train_functions.py as a module, with a no-op library.utils.setup_logging (which needs torchvision
    and cv2); with stub_diffusers, its module-level DDPMScheduler import is satisfied by a placeholder, for callers that
    use none of the functions needing it."""
    library = types.ModuleType("library")
    library.__path__ = []
    utils = types.ModuleType("library.utils")
    utils.setup_logging = lambda *a, **k: None
    library.utils = utils
    sys.modules.update({"library": library, "library.utils": utils})
    if stub_diffusers:
        ddpm = types.ModuleType("diffusers.schedulers.scheduling_ddpm")
        ddpm.DDPMScheduler = object
        sys.modules.update({"diffusers": types.ModuleType("diffusers"), "diffusers.schedulers": types.ModuleType("diffusers.schedulers"),
                            "diffusers.schedulers.scheduling_ddpm": ddpm})
    spec = importlib.util.spec_from_file_location("library.custom_train_functions", os.path.join(checkout, "library", "custom_train_functions.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["library.custom_train_functions"] = module
    spec.loader.exec_module(module)
    library.custom_train_functions = module
    return module
