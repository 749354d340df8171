// LightCapImage: placeholder until the first component lands.
