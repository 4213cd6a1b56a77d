"""The checkpoint folder contract, in one place: its files (`folder`), how it is written and
published atomically (`folder.write_checkpoint`), which folders count (`is_complete`,
`latest_complete`), how training resumes from it (`state`), how weights go in and out
(`weights`) and how a lab checkpoint becomes the parent of another (`lineage`)."""

from .folder import (
    CHECKPOINTS_DIR,
    COMPLETE_MARKER,
    SIGNATURE,
    WEIGHT_FILES,
    checkpoint_name,
    checkpoints_dir,
    clean_stale,
    is_complete,
    latest_complete,
    list_complete,
    missing_files,
    prune,
    step_of,
    write_checkpoint,
)
from .state import (
    TRAINING_STATE_DIR,
    TrainingState,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)
from .weights import load_model_files, save_model_files

__all__ = [
    "CHECKPOINTS_DIR",
    "COMPLETE_MARKER",
    "SIGNATURE",
    "TRAINING_STATE_DIR",
    "WEIGHT_FILES",
    "TrainingState",
    "capture_rng_state",
    "checkpoint_name",
    "checkpoints_dir",
    "clean_stale",
    "is_complete",
    "latest_complete",
    "list_complete",
    "load_model_files",
    "load_training_state",
    "missing_files",
    "prune",
    "restore_rng_state",
    "save_model_files",
    "save_training_state",
    "step_of",
    "write_checkpoint",
]
