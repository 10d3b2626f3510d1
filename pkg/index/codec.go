package index

import jsoniter "github.com/json-iterator/go"

// entryJSON decodes entries: a list decodes every entry it reads, which is most of its cost, and
// json-iterator does it at about twice the speed of encoding/json for the same struct tags (entries are
// written with encoding/json; both read each other's output).
var entryJSON = jsoniter.ConfigCompatibleWithStandardLibrary
