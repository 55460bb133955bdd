"""Image and animation I/O (loading, saving, grids, overlays, GIFs)."""

from fgtool.io.gif import read_gif, write_gif
from fgtool.io.images import (
    IMAGE_EXTENSIONS,
    contact_sheet,
    decode_image,
    image_size,
    list_images,
    load_image,
    mask_contour,
    mask_overlay,
    part_overlay,
    save_grid,
    save_image,
    to_pil,
    to_tensor,
)

__all__ = [
    "IMAGE_EXTENSIONS", "contact_sheet", "decode_image", "image_size", "list_images", "load_image",
    "mask_contour", "mask_overlay", "part_overlay", "read_gif", "save_grid", "save_image", "to_pil", "to_tensor",
    "write_gif",
]
