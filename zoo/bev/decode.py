"""The model's pre/post-processing lives in the runtime (edgert.bev.decode, numpy only); training
imports it from there so train time and run time share one definition."""
from edgert.bev.decode import (BOX_REG, IMAGE_MEAN, IMAGE_STD, OBJECT_CLASS_IDS, decode_boxes,  # noqa: F401
                               preprocess, seg_to_grid, warp_bev, warp_tables)
