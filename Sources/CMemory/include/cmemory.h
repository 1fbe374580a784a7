#ifndef SWIFTEDGE_CMEMORY_H
#define SWIFTEDGE_CMEMORY_H
#include <stddef.h>
/// Returns free heap pages to the operating system (glibc malloc_trim); 0 elsewhere.
int swiftedge_release_free_memory(void);
#endif
