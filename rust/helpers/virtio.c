// SPDX-License-Identifier: GPL-2.0

#include <linux/virtio.h>

/*
 * The feature words of a virtio device, which VIRTIO_DECLARE_FEATURES()
 * puts in an anonymous union: Rust would have to name it after bindgen.
 */
__rust_helper u64 *rust_helper_virtio_features_array(struct virtio_device *vdev)
{
	return vdev->features_array;
}
