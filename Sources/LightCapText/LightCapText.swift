// LightCapText: placeholder until the first component lands.
