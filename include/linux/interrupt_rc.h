/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Counted local interrupt disabling.
 *
 * local_irq_save() and local_irq_restore() must pair up strictly inside
 * out: restoring the flags of an outer section while an inner one is still
 * open turns interrupts back on inside it. Code whose sections may end in
 * any order (a language whose lock guards are values that can be dropped
 * in any order, Rust for one) needs a form that does not depend on it.
 *
 * local_interrupt_disable() disables interrupts on the local CPU and counts
 * the sections open on it; local_interrupt_enable() closes one, and the last
 * one to close restores the interrupt state that the first one found. From
 * the first disable to the last enable interrupts stay disabled, so nothing
 * else runs on the CPU in between but NMIs, which must not use this.
 *
 * spin_lock_irq_disable() and spin_unlock_irq_enable() take and release a
 * spinlock inside such a section.
 *
 * On PREEMPT_RT, interrupt handlers run in threads and spinlock_t sleeps, so
 * spin_lock_irq() leaves interrupts enabled there, and so do these: a section
 * only keeps the task on its CPU (migrate_disable(), which nests per task in
 * any order), and spin_lock_irq_disable() is spin_lock(). A spinlock_t taken
 * inside a section is then taken where it may sleep, as it must be on RT.
 */
#ifndef _LINUX_INTERRUPT_RC_H
#define _LINUX_INTERRUPT_RC_H

#include <linux/irqflags.h>
#include <linux/percpu-defs.h>
#include <linux/spinlock.h>

#ifdef CONFIG_PREEMPT_RT

static __always_inline void local_interrupt_disable(void)
{
	migrate_disable();
}

static __always_inline void local_interrupt_enable(void)
{
	migrate_enable();
}

static __always_inline void spin_lock_irq_disable(spinlock_t *lock)
{
	spin_lock(lock);
}

static __always_inline void spin_unlock_irq_enable(spinlock_t *lock)
{
	spin_unlock(lock);
}

static __always_inline int spin_trylock_irq_disable(spinlock_t *lock)
{
	return spin_trylock(lock);
}

#else

/**
 * struct local_interrupt_state - the counted sections of one CPU
 * @flags: the interrupt state the outermost section found
 * @count: the sections open
 */
struct local_interrupt_state {
	unsigned long flags;
	unsigned int count;
};

DECLARE_PER_CPU(struct local_interrupt_state, local_interrupt_state);

/**
 * local_interrupt_disable - open a counted section with interrupts disabled
 *
 * Any context but NMI. Closed by local_interrupt_enable(), in any order
 * with respect to the other sections of the CPU.
 */
static __always_inline void local_interrupt_disable(void)
{
	unsigned long flags;

	/* Disabled first: no interrupt handler on this CPU sees the count move. */
	local_irq_save(flags);
	if (__this_cpu_inc_return(local_interrupt_state.count) == 1)
		__this_cpu_write(local_interrupt_state.flags, flags);
}

/**
 * local_interrupt_enable - close a section of local_interrupt_disable()
 *
 * The last section of the CPU to close restores the interrupt state that the
 * first one found.
 */
static __always_inline void local_interrupt_enable(void)
{
	lockdep_assert_irqs_disabled();
	if (!__this_cpu_dec_return(local_interrupt_state.count))
		local_irq_restore(__this_cpu_read(local_interrupt_state.flags));
}

/**
 * spin_lock_irq_disable - take @lock in a counted section (local_interrupt_disable())
 * @lock: the lock
 */
static __always_inline void spin_lock_irq_disable(spinlock_t *lock)
{
	local_interrupt_disable();
	spin_lock(lock);
}

/**
 * spin_unlock_irq_enable - release @lock and close its counted section
 * @lock: the lock, taken by spin_lock_irq_disable()
 */
static __always_inline void spin_unlock_irq_enable(spinlock_t *lock)
{
	spin_unlock(lock);
	local_interrupt_enable();
}

/**
 * spin_trylock_irq_disable - try to take @lock in a counted section
 * @lock: the lock
 *
 * Return: 1 if @lock was taken (in a section that spin_unlock_irq_enable()
 * closes), 0 if not (and no section is left open).
 */
static __always_inline int spin_trylock_irq_disable(spinlock_t *lock)
{
	local_interrupt_disable();
	if (spin_trylock(lock))
		return 1;
	local_interrupt_enable();
	return 0;
}

#endif /* CONFIG_PREEMPT_RT */

#endif /* _LINUX_INTERRUPT_RC_H */
