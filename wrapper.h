/*
 * wrapper.h - the one header bindgen reads for vmbus-kmcl-sys.
 *
 * First the base types: <wdm.h> when a WDK is used (the build defines
 * VMBUS_KMCL_USE_WDK), otherwise the crate's minimal fixed-width header.
 * Then the KMCL header itself; the include path decides whether that is
 * Microsoft's (the WDK's km directory comes first) or the bundled one.
 */
#ifdef VMBUS_KMCL_USE_WDK
#include <wdm.h>
#else
#include <kmcl_base_types.h>
#endif

#include <VmbusKernelModeClientLibApi.h>
