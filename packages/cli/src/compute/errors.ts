/** The errors of `diskhub compute`: a message for the operator and a non-zero exit. */

export type ComputeErrorKind =
  | 'usage'        // wrong arguments
  | 'not-found'    // no such image (or instance disk)
  | 'unacceptable' // the image cannot be used (Nova's ImageUnacceptable)
  | 'corrupt'      // the download does not match the image's hash
  | 'too-small'    // the flavor's disk is smaller than the image (Nova's FlavorDiskSmallerThanImage)
  | 'service'      // the image service refused a request
  | 'cancelled'    // interrupted (SIGINT, SIGTERM)
  | 'failed';      // anything else

export class ComputeError extends Error {
  constructor(message: string, readonly kind: ComputeErrorKind = 'failed') {
    super(message);
    this.name = 'ComputeError';
  }
}

/** Nova's FlavorDiskSmallerThanImage. */
export function flavorDiskSmallerThanImage(flavorSize: number, imageSize: number): ComputeError {
  return new ComputeError(`Flavor's disk is too small for requested image. Flavor disk is ${flavorSize} bytes, image is ${imageSize} bytes.`, 'too-small');
}

/** Nova's ImageUnacceptable: "Image %(image_id)s is unacceptable: %(reason)s". */
export function imageUnacceptable(imageId: string, reason: string): ComputeError {
  return new ComputeError(`Image ${imageId} is unacceptable: ${reason}`, 'unacceptable');
}
