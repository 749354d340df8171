// Fuzzes the image decoder's entry point: format sniffing, JPEG (with DCT scaling), PNG (the fast
// path and libspng), WebP, EXIF orientation and the size limits. The first byte picks the limits
// and the JPEG scaling, the rest is the file. The limits here (at most 2^20 pixels) keep every
// accepted image fast to decode; the memory a rejected image may cost is bounded separately
// (docs/FUZZING.md, "Memory").
import Foundation
import FuzzSupport
import LightCapImage

let limitChoices = [ImageLimits(maxPixels: 1 << 20, maxDimension: 4096), ImageLimits(maxPixels: 1 << 16, maxDimension: 256),
                    ImageLimits(maxPixels: 1 << 20, maxDimension: 65_535)]
let minimumSides: [Int?] = [nil, 224, 16, 1]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let data = Fuzz.data(start, count)
    guard let control = data.first else { return 0 }
    let limits = limitChoices[Int(control & 0x0F) % limitChoices.count]
    let minimumSide = minimumSides[Int(control >> 4) % minimumSides.count]
    do {
        let image = try ImageDecoder.decode(Data(data.dropFirst()), limits: limits, minimumSide: minimumSide)
        precondition(image.pixels.count == image.width * image.height * 3, "pixel count does not match the size")
        precondition(image.width * image.height <= limits.maxPixels, "an image over the limit was decoded")
    } catch {
        Fuzz.expectTyped(error, [ImageError.self], "image")
    }
    return 0
}
