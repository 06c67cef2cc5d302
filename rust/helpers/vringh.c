// SPDX-License-Identifier: GPL-2.0

#include <linux/vringh.h>

__rust_helper void rust_helper_vringh_kiov_init(struct vringh_kiov *kiov,
						struct kvec *kvec, unsigned int num)
{
	vringh_kiov_init(kiov, kvec, num);
}

__rust_helper void rust_helper_vringh_kiov_cleanup(struct vringh_kiov *kiov)
{
	vringh_kiov_cleanup(kiov);
}

__rust_helper size_t rust_helper_vringh_kiov_length(struct vringh_kiov *kiov)
{
	return vringh_kiov_length(kiov);
}
