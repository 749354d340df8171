// LightCapModel: placeholder until the first component lands.
