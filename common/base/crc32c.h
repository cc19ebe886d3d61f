/* crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of TFRecord framing, table-driven. No Debian package ships it as
 * a small library of its own, hence these few lines. */
#ifndef ALIGN_CRC32C_H
#define ALIGN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue crc over data[0..n) (start with 0). */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t n);
static inline uint32_t crc32c(const void *data, size_t n) { return crc32c_update(0, data, n); }
/* TFRecord's masked form: rotate right by 15 and add 0xa282ead8, so a CRC
 * of data that itself holds CRCs does not degenerate. */
static inline uint32_t crc32c_masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

#endif
