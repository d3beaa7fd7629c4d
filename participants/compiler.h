/*
 * Compiler annotations shared by the coordinator and the drivers.
 */
#ifndef XA_COMPILER_H
#define XA_COMPILER_H

/* A fallible function: ignoring its result is a compile error under -Werror. (A cast to void
 * does not silence GCC: handle the failure, or say in a branch why it cannot matter.) */
#define XA_MUST_CHECK __attribute__((warn_unused_result))

#endif
