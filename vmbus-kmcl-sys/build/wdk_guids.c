/*
 * WDK mode only: instantiates the KMCL interface GUIDs. Their values are not
 * public, so they are taken from the WDK's header, never written here;
 * INITGUID turns the header's GUID declarations into definitions.
 */
#define INITGUID
#include "wrapper.h"
