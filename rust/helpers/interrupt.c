// SPDX-License-Identifier: GPL-2.0

#include <linux/interrupt_rc.h>

__rust_helper void rust_helper_local_interrupt_disable(void)
{
	local_interrupt_disable();
}

__rust_helper void rust_helper_local_interrupt_enable(void)
{
	local_interrupt_enable();
}

__rust_helper void rust_helper_spin_lock_irq_disable(spinlock_t *lock)
{
	spin_lock_irq_disable(lock);
}

__rust_helper void rust_helper_spin_unlock_irq_enable(spinlock_t *lock)
{
	spin_unlock_irq_enable(lock);
}

__rust_helper int rust_helper_spin_trylock_irq_disable(spinlock_t *lock)
{
	return spin_trylock_irq_disable(lock);
}
