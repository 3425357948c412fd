/*
 * WDK mode only: reports the layout of the interface tables as the WDK's
 * header declares them, so that tests/wdk_mode.rs can compare it with the
 * Rust structures (which bindgen takes from the bundled header, because it
 * cannot lay out the unnamed members of Microsoft's tables).
 *
 * The list of entries, wdk_layout_fields.h, is written by build/generate.rs
 * from the Rust structures: one VMBUS_KMCL_LAYOUT_TABLE per table, then one
 * VMBUS_KMCL_LAYOUT_FIELD per leaf field, naming the member as the WDK's
 * header reaches it (fields of unnamed members directly) and the field's
 * path in the Rust structure. A member the WDK's header lacks fails this
 * compilation.
 */
#include <stddef.h>

#include "wrapper.h"

/* One entry of the report; mirrored by `LayoutEntry` in tests/wdk_mode.rs. */
struct vmbus_kmcl_layout_entry {
    /* Name of the table. */
    const char *table;
    /* Rust path of the field, or "" for the whole table. */
    const char *rust_path;
    /* Offset of the field in the table; 0 for the whole table. */
    size_t offset;
    /* Size of the field, or of the whole table. */
    size_t size;
};

#define VMBUS_KMCL_LAYOUT_TABLE(type) { #type, "", 0, sizeof(type) },
#define VMBUS_KMCL_LAYOUT_FIELD(type, member, rust_path) \
    { #type, rust_path, offsetof(type, member), sizeof(((type *)0)->member) },

static const struct vmbus_kmcl_layout_entry vmbus_kmcl_layout_entries[] = {
#include "wdk_layout_fields.h"
};

/* The report: its entries, and their number in *count. */
const struct vmbus_kmcl_layout_entry *vmbus_kmcl_wdk_layout(size_t *count)
{
    *count = sizeof(vmbus_kmcl_layout_entries) / sizeof(vmbus_kmcl_layout_entries[0]);
    return vmbus_kmcl_layout_entries;
}
